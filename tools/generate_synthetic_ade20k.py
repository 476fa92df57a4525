"""Writes a small synthetic segmentation set in ADE20K's on-disk layout.

    python tools/generate_synthetic_ade20k.py [--root data/synthetic_ade20k] [--num-train 200] [--num-val 40]

Point an mmseg ``ADE20KDataset`` at ``--root`` (``data_root``) with its usual
``images/{training,validation}`` and ``annotations/{training,validation}``
prefixes. See internvit_dense/datasets/synthetic_ade20k.py for what the images
contain.
"""
import argparse

from mmseg.datasets import ADE20KDataset

from internvit_dense.datasets.synthetic_ade20k import generate_synthetic_ade20k


def parse_size(text):
    lo, _, hi = text.partition(',')
    return int(lo) if not hi else (int(lo), int(hi))


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

    names = ADE20KDataset.METAINFO['classes']
    total = sum(s['train_pixel_counts'].values())
    print(f"wrote {s['num_train']} training + {s['num_val']} validation images to {s['root']} "
          f"in {s['seconds']:.1f} s (seed {s['seed']})")
    for split, info in s['paths'].items():
        print(f"  {split:<10} {info['count']:>5}  {info['img_dir']}  {info['ann_dir']}")
    print('classes (file value -> mmseg class index: ADE20K name, share of training pixels):')
    print(f"  {0:>3} -> 255 (ignored): other/unlabelled, {s['train_pixel_counts'].get(0, 0) / total:.1%}")
    for v in s['classes']:
        role = 'background' if v == s['background_class'] else 'shape'
        print(f"  {v:>3} -> {v - 1:>3}: {names[v - 1].strip():<10} {role:<10} "
              f"{s['train_pixel_counts'].get(v, 0) / total:.1%}")


if __name__ == '__main__':
    main()
