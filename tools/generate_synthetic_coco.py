"""Writes a small synthetic instance-segmentation set in COCO's on-disk layout.

    python tools/generate_synthetic_coco.py [--root data/synthetic_coco] [--num-train 200] [--num-val 40]

Point mmdet's ``CocoDataset`` at ``--root`` (``data_root``) with its usual
``annotations/instances_{train,val}2017.json`` and ``{train,val}2017/`` and
``metainfo=dict(classes=('ball', 'crate', 'cone', 'gem'))``, as
configs/_base_/datasets/synthetic_coco.py does. The same images' panoptic layout (things and the
stuff classes sky, wall, floor) is in ``annotations/panoptic_{train,val}2017.json`` and its PNG
folders, for mmdet's ``CocoPanopticDataset``
(configs/mask2former/tiny/tiny_adapter_mask2former_panoptic_synthetic.py). See
internvit_dense/datasets/synthetic_coco.py for what the images contain.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout without install

from internvit_dense.datasets.synthetic_coco import describe, generate_synthetic_coco  # noqa: E402
from internvit_dense.datasets.synthetic_root import parse_size  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--root', default='data/synthetic_coco', help='output directory (default: %(default)s)')
    p.add_argument('--num-train', type=int, default=200)
    p.add_argument('--num-val', type=int, default=40)
    p.add_argument('--size', type=parse_size, default=(128, 160),
                   help="side length, or 'LO,HI' to draw height and width from [LO, HI] (default: 128,160)")
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--overwrite', action='store_true', help='replace a set already in --root')
    p.add_argument('--quiet', action='store_true', help='no progress bar')
    args = p.parse_args(argv)

    try:
        s = generate_synthetic_coco(args.root, num_train=args.num_train, num_val=args.num_val, size=args.size,
                                    seed=args.seed, progress=not args.quiet, overwrite=args.overwrite)
    except (FileExistsError, NotADirectoryError, ValueError) as e:
        p.error(str(e))

    print(describe(s))


if __name__ == '__main__':
    main()
