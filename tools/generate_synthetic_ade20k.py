"""Writes a small synthetic segmentation set in ADE20K's on-disk layout.

    python tools/generate_synthetic_ade20k.py [--root data/synthetic_ade20k] [--num-train 200] [--num-val 40]

Point an mmseg ``ADE20KDataset`` at ``--root`` (``data_root``) with its usual
``images/{training,validation}`` and ``annotations/{training,validation}``
prefixes. See internvit_dense/datasets/synthetic_ade20k.py for what the images
contain.
"""
import argparse

from internvit_dense.datasets.synthetic_ade20k import describe, generate_synthetic_ade20k
from internvit_dense.datasets.synthetic_root import parse_size


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--root', default='data/synthetic_ade20k', help='output directory (default: %(default)s)')
    p.add_argument('--num-train', type=int, default=200)
    p.add_argument('--num-val', type=int, default=40)
    p.add_argument('--size', type=parse_size, default=(120, 160),
                   help="side length, or 'LO,HI' to draw height and width from [LO, HI] (default: 120,160)")
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--classes', type=lambda s: [int(v) for v in s.split(',')],
                   help='comma-separated shape classes (ADE20K file values), default all')
    p.add_argument('--overwrite', action='store_true', help='replace a set already in --root')
    p.add_argument('--quiet', action='store_true', help='no progress bar')
    args = p.parse_args(argv)

    try:
        s = generate_synthetic_ade20k(args.root, num_train=args.num_train, num_val=args.num_val, size=args.size,
                                      seed=args.seed, classes=args.classes, progress=not args.quiet,
                                      overwrite=args.overwrite)
    except (FileExistsError, NotADirectoryError, ValueError) as e:
        p.error(str(e))

    print(describe(s))


if __name__ == '__main__':
    main()
