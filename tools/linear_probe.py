#!/usr/bin/env python
"""Linear-probe benchmark for comparing backbones: extract features once, sweep a grid, evaluate everywhere.

    # 1. run the frozen backbone once over ImageNet-1k and its variants; resumable (rerun the same command)
    python tools/linear_probe.py extract --data-root data/imagenet \\
        --checkpoint pretrained/intern_vit_6b_224px.pth --arch 6b --img-size 224 --blocks last4
    # 2. train learning rates x {last 1, last 4 blocks} x {with, without mean patch} in one pass
    python tools/linear_probe.py sweep --cache work_dirs/linear_probe/cache/intern_vit_6b_224px-<key>
    # 3. score the chosen probe on IN-1k, ReaL, V2, A, R and Sketch; one table (+ JSON, PNG)
    python tools/linear_probe.py eval --cache work_dirs/linear_probe/cache/intern_vit_6b_224px-<key>

``sweep`` and ``eval`` read only the cache: the backbone is never built again. Data
layouts: internvit_dense/datasets/imagenet.py; a small synthetic set in those layouts:
``python tools/generate_synthetic_imagenet.py --root data/synthetic_imagenet``.
"""
from __future__ import annotations

import argparse
import json
import os.path as osp
import sys
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout without install

from internvit_dense.linear_probe.variants import VARIANTS  # noqa: E402

EXTRACT_SPLITS = ('train', 'in1k', 'v2', 'sketch', 'a', 'r')  # cache split names; ReaL rides on in1k
DEFAULT_CACHE_ROOT = 'work_dirs/linear_probe/cache'


# ------------------------------------------------------------------ arguments
def _csv(cast):
    return lambda text: [cast(v) for v in text.split(',') if v.strip()]


def _key_value(text):
    key, sep, value = text.partition('=')
    if not sep:
        raise argparse.ArgumentTypeError(f'expected NAME=PATH, got {text!r}')
    return key, value


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest='command', required=True)

    e = sub.add_parser('extract', help='run the frozen backbone once and cache features (resumable)')
    e.add_argument('--data-root', required=True, help='folder holding imagenet-1k/, imagenetv2/, imagenet-a/ ...')
    e.add_argument('--splits', type=_csv(str), default=None,
                   help=f'cache splits to extract (default: every one found of {",".join(EXTRACT_SPLITS)}); '
                        'ReaL needs no split of its own (it re-scores in1k with real.json)')
    e.add_argument('--path', type=_key_value, action='append', default=[],
                   help='override a split folder, e.g. --path v2=/data/imagenetv2-matched-frequency')
    e.add_argument('--real-json', help='ImageNet-ReaL labels (default: found under the data root)')
    g = e.add_mutually_exclusive_group(required=True)
    g.add_argument('--checkpoint', help='backbone weights: OpenGVLab .pth, or a Hugging Face directory')
    g.add_argument('--random-init', action='store_true', help='a randomly initialised backbone (smoke tests)')
    e.add_argument('--arch', help="'6b', '6b-448', '300m' or a JSON dict (needed for .pth and --random-init)")
    e.add_argument('--img-size', type=int, default=224, help='crop size (default: %(default)s)')
    e.add_argument('--resize-size', type=int, default=None,
                   help='short edge before the centre crop (default: the crop size, as InternVL does)')
    e.add_argument('--patch-size', type=int, default=None)
    e.add_argument('--pretrain-size', type=int, default=None)
    e.add_argument('--blocks', default=None,
                   help="'lastN' or block indices '44,45,46,47' (default: last4, or every block of a shallower model)")
    e.add_argument('--train-views', type=int, default=0,
                   help='0: the training split through the eval transform (default); K: K random-resized-crop '
                        '+ flip views per image, one drawn per epoch by the sweep')
    e.add_argument('--cache-root', default=DEFAULT_CACHE_ROOT, help='(default: %(default)s)')
    e.add_argument('--name', help='cache folder prefix (default: the checkpoint name)')
    e.add_argument('--batch-size', type=int, default=64)
    e.add_argument('--chunk-size', type=int, default=1024, help='images per resumable unit (default: %(default)s)')
    e.add_argument('--workers', type=int, default=4)
    e.add_argument('--device', default=None, help='default: cuda if available')
    e.add_argument('--precision', choices=['fp32', 'bf16', 'fp16'], default=None,
                   help='backbone weights and compute (default: bf16 on CUDA, fp32 on CPU)')
    e.add_argument('--dtype', choices=['float16', 'float32'], default='float16', help='stored features')
    e.add_argument('--seed', type=int, default=0, help='seeds the augmented training views')
    e.add_argument('--restart', action='store_true', help='discard partial splits instead of resuming them')
    e.add_argument('--quiet', action='store_true', help='no progress bars')

    s = sub.add_parser('sweep', help='train the grid of linear probes in one pass over the cache')
    s.add_argument('--cache', required=True, help='a cache folder written by extract')
    s.add_argument('--out', help='where sweep.json and best_classifier.pth go (default: <cache>/sweep)')
    s.add_argument('--lrs', type=_csv(float), default=None, help='learning rates per 512 images (comma-separated)')
    s.add_argument('--n-last', type=_csv(int), default=[1, 4], help='cls tokens of the last N blocks (default: 1,4)')
    s.add_argument('--avgpool', choices=['both', 'yes', 'no'], default='both', help='append the mean patch token')
    s.add_argument('--epochs', type=int, default=10)
    s.add_argument('--warmup-epochs', type=float, default=1.0)
    s.add_argument('--batch-size', type=int, default=1024)
    s.add_argument('--holdout', type=float, default=0.02, help='fraction of train held out to choose on')
    s.add_argument('--select-on', choices=['holdout', 'val'], default='holdout')
    s.add_argument('--seed', type=int, default=0)
    s.add_argument('--device', default=None)
    s.add_argument('--precision', choices=['fp32', 'bf16'], default=None,
                   help="the classifiers' GEMMs (default: bf16 on CUDA, fp32 on CPU; bf16 is faster on CPUs with AMX)")
    s.add_argument('--quiet', action='store_true')

    v = sub.add_parser('eval', help='score the chosen probe on every variant in the cache')
    v.add_argument('--cache', required=True)
    v.add_argument('--sweep', help='sweep folder (default: <cache>/sweep)')
    v.add_argument('--recipe-checkpoint',
                   help='score a LinearProbeClassifier trained by tools/train.py instead of the sweep\'s choice')
    v.add_argument('--variants', type=_csv(str), default=None, help=f'subset of {",".join(VARIANTS)}')
    v.add_argument('--out', help='where eval.json and accuracy_vs_lr.png go (default: the sweep folder)')
    v.add_argument('--device', default=None)
    return p.parse_args(argv)


# ------------------------------------------------------------------- extract
def build_backbone(args, dtype=None):
    import torch

    from internvit_dense.models.backbones import InternViT

    arch = args.arch
    if arch and arch.strip().startswith('{'):
        arch = json.loads(arch)
    kwargs = dict(img_size=args.img_size, frozen=True, dtype=dtype)
    if args.patch_size:
        kwargs['patch_size'] = args.patch_size
    if args.pretrain_size:
        kwargs['pretrain_size'] = args.pretrain_size
    if args.random_init:
        if arch is None:
            raise SystemExit('--random-init needs --arch')
        torch.manual_seed(args.seed)
        model = InternViT(arch=arch, **kwargs)
    else:
        if arch is not None:
            kwargs['arch'] = arch
        model = InternViT.from_pretrained(args.checkpoint, **kwargs)
    return model.eval()


def parse_blocks(text, depth: int):
    if text is None:
        text = f'last{min(4, depth)}'
    if text.startswith('last'):
        n = int(text[4:])
        if not 1 <= n <= depth:
            raise SystemExit(f'--blocks {text}: the backbone has {depth} blocks')
        return list(range(depth - n, depth))
    blocks = sorted({int(b) % depth for b in text.split(',')})
    return blocks


def find_splits(args, wnids):
    """{split: (folder, ann_file or None)} of the splits asked for / present."""
    from internvit_dense.datasets.imagenet import class_folders, resolve_class_root
    from internvit_dense.linear_probe.variants import TRAIN_ANN, TRAIN_PATH

    overrides = dict(args.path)
    unknown = set(overrides) - set(EXTRACT_SPLITS)
    if unknown:
        raise SystemExit(f'--path: unknown split(s) {sorted(unknown)}; splits are {",".join(EXTRACT_SPLITS)}')
    found, missing = {}, []
    for split in args.splits or EXTRACT_SPLITS:
        if split not in EXTRACT_SPLITS:
            raise SystemExit(f'unknown split {split!r}; splits are {",".join(EXTRACT_SPLITS)} (ReaL uses in1k)')
        rel, ann = (TRAIN_PATH, TRAIN_ANN) if split == 'train' else (VARIANTS[split].path, VARIANTS[split].ann_file)
        folder = overrides.get(split, osp.join(args.data_root, rel))
        ann = osp.join(args.data_root, ann) if ann else None
        if class_folders(resolve_class_root(folder)) or (ann and osp.isfile(ann) and osp.isdir(folder)):
            found[split] = (folder, ann)
        else:
            missing.append((split, folder))
    if args.splits and missing:
        raise SystemExit('not found: ' + ', '.join(f'{s} ({f})' for s, f in missing))
    return found, missing


def cmd_extract(args):
    import torch

    from internvit_dense.datasets.imagenet import class_subset, find_real_json, list_split, real_labels_for, \
        train_wnids
    from internvit_dense.linear_probe.cache import FeatureCache, checkpoint_identity
    from internvit_dense.linear_probe.extract import eval_pipeline, extract_split, train_pipeline

    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    precision = args.precision or ('bf16' if device.startswith('cuda') else 'fp32')
    train_dir = dict(args.path).get('train')
    wnids = train_wnids(args.data_root, train_path=osp.abspath(train_dir) if train_dir else None)
    splits, missing = find_splits(args, wnids)
    if not splits:
        raise SystemExit(f'no split found under {args.data_root}; see internvit_dense/datasets/imagenet.py')

    # built in the precision's dtype straight from the checkpoint (on the meta device: no fp32 copy first)
    model = build_backbone(args, dtype=dict(fp32=torch.float32, bf16=torch.bfloat16, fp16=torch.float16)[precision])
    blocks = parse_blocks(args.blocks, model.depth)
    model.to(device=device)
    identity = dict(
        checkpoint=(dict(kind='random', seed=args.seed) if args.random_init
                    else checkpoint_identity(args.checkpoint)),
        arch=model.arch, patch_size=model.patch_size, pretrain_size=model.pretrain_size, img_size=args.img_size,
        resize_size=args.resize_size or args.img_size, blocks=blocks, precision=precision, dtype=args.dtype)
    name = args.name or ('random' if args.random_init else
                         osp.splitext(osp.basename(osp.normpath(args.checkpoint)))[0])
    cache = FeatureCache.for_identity(args.cache_root, identity, name)
    print(f'feature cache: {cache.root}\n  backbone: {model.depth} blocks x {model.embed_dims} dims, '
          f'caching blocks {blocks} (cls + mean patch), {precision} on {device}, stored as {args.dtype}')
    for split, folder in missing:
        print(f'  {split}: not found at {folder}, skipped')

    start = time.time()
    computed = {}
    for split, (folder, ann) in splits.items():
        items = list_split(folder, wnids, ann)
        paths, labels = [p for p, _ in items], [lab for _, lab in items]
        meta = dict(classes=wnids, variant=split, folder=osp.abspath(folder))
        if split in ('a', 'r'):
            meta['class_subset'] = class_subset(items)
        if split == 'in1k':
            real = find_real_json(args.data_root, args.real_json)
            if real:
                meta['real_labels'] = real_labels_for(items, real)
                meta['real_json'] = osp.abspath(real)
        augment = split == 'train' and args.train_views > 0
        views = args.train_views if augment else 1
        pipeline = train_pipeline(args.img_size) if augment else eval_pipeline(args.img_size, args.resize_size)
        if args.restart and not cache.is_complete(split):
            cache.drop_split(split)
        before = len(cache.splits.get(split, {}).get('done', []))
        try:
            info = extract_split(cache, split, paths, labels, model, pipeline, views=views, seed=args.seed,
                                 batch_size=args.batch_size, chunk_size=args.chunk_size, num_workers=args.workers,
                                 dtype=args.dtype, meta=meta, progress=not args.quiet)
        except KeyboardInterrupt:
            info = cache.splits[split]
            print(f'\ninterrupted: {split} has {len(info["done"])}/{info["num_chunks"]} chunks; '
                  'rerun the same command to finish without recomputing them')
            raise SystemExit(130)
        computed[split] = (info, len(info['done']) - before)

    print(f'\nextraction finished in {time.time() - start:.1f} s: {cache.root}')
    print(f"{'split':<8}{'images':>8}{'views':>7}{'chunks':>8}{'computed':>10}  status")
    for split, (info, new) in computed.items():
        status = 'complete' if info['complete'] else 'INCOMPLETE'
        print(f"{split:<8}{info['num_images']:>8}{info['views']:>7}{info['num_chunks']:>8}{new:>10}  {status}")
    print(f'next: python tools/linear_probe.py sweep --cache {cache.root}')


# --------------------------------------------------------------------- sweep
def cmd_sweep(args):
    from internvit_dense.linear_probe.cache import FeatureCache
    from internvit_dense.linear_probe.grid import DEFAULT_LRS
    from internvit_dense.linear_probe.sweep import format_sweep_table, resolve_device, resolve_precision, run_sweep

    cache = FeatureCache(args.cache)
    out = args.out or osp.join(cache.root, 'sweep')
    avgpool = dict(both=(False, True), yes=(True,), no=(False,))[args.avgpool]
    device = resolve_device(args.device)
    summary = run_sweep(cache, out, lrs=args.lrs or DEFAULT_LRS, n_lasts=args.n_last, avgpool=avgpool,
                        epochs=args.epochs, warmup_epochs=args.warmup_epochs, batch_size=args.batch_size,
                        holdout=args.holdout, select_on=args.select_on, seed=args.seed,
                        device=device, precision=resolve_precision(args.precision, device), progress=not args.quiet)
    best = summary['best']
    print('\n' + format_sweep_table(summary))
    metric = summary['select_on']
    print(f"\nsweep finished: {summary['num_classifiers']} classifiers in one pass, {summary['train_seconds']:.1f} s")
    print(f"best on {metric}: {best['feature']}, lr {best['lr']:g} per 512 images -> {best[metric]:.2f}% top-1"
          + (f" (IN-1k val {best['val']:.2f}%)" if 'val' in best and metric != 'val' else ''))
    print(f'saved: {osp.join(out, "sweep.json")}, {osp.join(out, "best_classifier.pth")}')
    print(f'next: python tools/linear_probe.py eval --cache {cache.root}' +
          (f' --sweep {out}' if args.out else ''))


# ---------------------------------------------------------------------- eval
def cmd_eval(args):
    from internvit_dense.linear_probe.cache import CacheError, FeatureCache
    from internvit_dense.linear_probe.evaluate import evaluate_variants, format_table, plot_lr_curves, write_json
    from internvit_dense.linear_probe.recipe import check_against_cache, load_recipe_probe
    from internvit_dense.linear_probe.sweep import SWEEP_JSON, load_best, resolve_device

    cache = FeatureCache(args.cache)
    sweep_dir = args.sweep or osp.join(cache.root, 'sweep')
    summary = None
    checks = None
    if args.recipe_checkpoint:
        try:
            probe = check_against_cache(load_recipe_probe(args.recipe_checkpoint), cache.manifest['identity'],
                                        cache.blocks, cache.dim)
        except CacheError as e:
            raise SystemExit(f'{args.recipe_checkpoint}: {e}')
        clf = probe.classifier
        checks = dict(verified=probe.verified, unverified=probe.unverified)
        source = f'recipe checkpoint {args.recipe_checkpoint}'
        out = args.out or osp.dirname(osp.abspath(args.recipe_checkpoint))
    else:
        clf, record = load_best(sweep_dir)
        if record['cache_key'] != cache.manifest['key']:
            raise SystemExit(f'{sweep_dir} was swept on another cache ({record["cache_key"]}), '
                             f'not {cache.manifest["key"]}')
        with open(osp.join(sweep_dir, SWEEP_JSON)) as f:
            summary = json.load(f)
        source = f"sweep {sweep_dir}: {clf.spec}, lr {clf.lr:g} per 512 images"
        out = args.out or sweep_dir
    unknown = set(args.variants or []) - set(VARIANTS)
    if unknown:
        raise SystemExit(f'unknown variant(s) {sorted(unknown)}; variants are {",".join(VARIANTS)}')
    rows = evaluate_variants(cache, clf, args.variants, device=resolve_device(args.device))
    if not rows:
        raise SystemExit(f'no evaluation split in {cache.root}: extract in1k, v2, a, r or sketch first')
    missing = [n for n in VARIANTS if n not in {r['variant'] for r in rows}]

    print(f'linear probe: {source}\nfeatures: {cache.root}')
    if checks:
        if checks['verified']:
            print('checked against the cache: ' + ', '.join(checks['verified']))
        for note in checks['unverified']:
            print(f'NOT VERIFIED: {note}')
    print()
    print(format_table(rows))
    if missing:
        print(f"\nnot in the cache: {', '.join(VARIANTS[n].title for n in missing)}"
              + (' (ReaL needs real.json next to the val split at extract time)' if 'real' in missing else ''))
    json_path = osp.join(out, 'eval.json')
    write_json(json_path, rows, dict(classifier=source, cache=cache.root, feature=clf.spec,
                                     lr=None if clf.lr != clf.lr else clf.lr, recipe_checks=checks))
    print(f'\nsaved: {json_path}')
    if summary is not None:
        print(f"saved: {plot_lr_curves(summary, osp.join(out, 'accuracy_vs_lr.png'))}")


def main(argv=None):
    args = parse_args(argv)
    if args.command in ('extract', 'sweep'):
        from internvit_dense.engine.launch import keep_freed_memory_on_cpu
        keep_freed_memory_on_cpu()
    dict(extract=cmd_extract, sweep=cmd_sweep, eval=cmd_eval)[args.command](args)


if __name__ == '__main__':
    main()
