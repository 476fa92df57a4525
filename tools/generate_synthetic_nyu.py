"""Writes a small synthetic depth set in NYU-Depth v2's on-disk layout (mmseg's NYUDataset).

    python tools/generate_synthetic_nyu.py [--root data/synthetic_nyu] [--num-train 200] [--num-test 40]

Point mmseg's ``NYUDataset`` at ``--root`` (``data_root``) with its usual ``images/{train,test}`` and
``annotations/{train,test}`` prefixes (configs/_base_/datasets/synthetic_nyu.py does). See
internvit_dense/datasets/synthetic_nyu.py for what the images contain and why their depth can be learned.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout without install

from internvit_dense.datasets.synthetic_nyu import describe, generate_synthetic_nyu  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--root', default='data/synthetic_nyu', help='output directory (default: %(default)s)')
    p.add_argument('--num-train', type=int, default=200)
    p.add_argument('--num-test', type=int, default=40)
    p.add_argument('--size', type=lambda s: tuple(int(v) for v in s.split(',')), default=(120, 160),
                   help="'H,W' of every image (default: 120,160, NYU's 480 x 640 / 4)")
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--overwrite', action='store_true', help='replace a set already in --root')
    p.add_argument('--quiet', action='store_true', help='no progress bar')
    args = p.parse_args(argv)
    if len(args.size) != 2:
        p.error(f"--size takes 'H,W', got {args.size}")
    try:
        s = generate_synthetic_nyu(args.root, num_train=args.num_train, num_test=args.num_test, size=args.size,
                                   seed=args.seed, progress=not args.quiet, overwrite=args.overwrite)
    except (FileExistsError, NotADirectoryError, ValueError) as e:
        p.error(str(e))
    print(describe(s))


if __name__ == '__main__':
    main()
