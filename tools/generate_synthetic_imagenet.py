#!/usr/bin/env python
"""Writes a small synthetic classification set in the layouts of ImageNet-1k and its variants.

    python tools/generate_synthetic_imagenet.py [--root data/synthetic_imagenet] [--num-classes 10]

The result is a data root for ``tools/linear_probe.py extract --data-root`` and for the
classification configs (``data_root``): imagenet-1k/{train,val,meta,real.json},
imagenetv2/, imagenet-sketch/, imagenet-a/, imagenet-r/. See
internvit_dense/datasets/synthetic_imagenet.py for what the images contain.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout without install

from internvit_dense.datasets.synthetic_imagenet import describe, generate_synthetic_imagenet  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--root', default='data/synthetic_imagenet', help='output directory (default: %(default)s)')
    p.add_argument('--num-classes', type=int, default=10, help='2..20 (default: %(default)s)')
    p.add_argument('--train-per-class', type=int, default=60)
    p.add_argument('--val-per-class', type=int, default=20)
    p.add_argument('--variant-per-class', type=int, default=10, help='images per class in V2/Sketch/A/R')
    p.add_argument('--size', type=lambda s: tuple(int(v) for v in s.split(',')), default=(64, 96),
                   help="'LO,HI': height and width drawn from [LO, HI] (default: 64,96)")
    p.add_argument('--val-layout', choices=['folders', 'flat'], default='folders',
                   help='val/<wnid>/*.JPEG, or flat val/*.JPEG with meta/val.txt')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--overwrite', action='store_true', help='replace a set already in --root')
    p.add_argument('--quiet', action='store_true', help='no progress bar')
    args = p.parse_args(argv)
    if len(args.size) != 2:
        p.error('--size takes LO,HI')
    try:
        s = generate_synthetic_imagenet(args.root, num_classes=args.num_classes,
                                        train_per_class=args.train_per_class, val_per_class=args.val_per_class,
                                        variant_per_class=args.variant_per_class, size=args.size,
                                        val_layout=args.val_layout, seed=args.seed, progress=not args.quiet,
                                        overwrite=args.overwrite)
    except (FileExistsError, NotADirectoryError, ValueError) as e:
        p.error(str(e))

    print(describe(s))
    print(f'next: python tools/linear_probe.py extract --data-root {args.root} --random-init --arch tiny '
          '--img-size 56')


if __name__ == '__main__':
    main()
