#!/usr/bin/env python
"""Linear-probe benchmark for comparing backbones: extract features once, sweep a grid, evaluate everywhere.

    # 1. run the frozen backbone once over ImageNet-1k and its variants; resumable (rerun the same command)
    python tools/linear_probe.py extract --data-root data/imagenet \\
        --checkpoint OpenGVLab/InternViT-6B-224px --img-size 224 --blocks last4
    #    other encoders through the same protocol: a timm model from a local file, a transformers folder
    python tools/linear_probe.py extract --data-root data/imagenet --backbone timm:vit_large_patch14_dinov2 \\
        --checkpoint pretrained/dinov2_vitl14.safetensors
    python tools/linear_probe.py extract --data-root data/imagenet --backbone hf:pretrained/siglip-so400m
    # 2. train learning rates x {last 1, last 4 blocks} x {with, without mean patch} in one pass
    python tools/linear_probe.py sweep --cache work_dirs/linear_probe/cache/intern_vit_6b_224px-<key>
    # 3. score the chosen probe on IN-1k, ReaL, V2, A, R and Sketch; one table (+ JSON, PNG)
    python tools/linear_probe.py eval --cache work_dirs/linear_probe/cache/intern_vit_6b_224px-<key>
    # 4. several encoders side by side: one table, one bar plot
    python tools/linear_probe.py compare work_dirs/linear_probe/cache/intern_vit_6b_224px-<key> \\
        work_dirs/linear_probe/cache/dinov2_vitl14-<key> --plot work_dirs/linear_probe/compare.png

``sweep`` and ``eval`` read only the cache: the backbone is never built again. Data
layouts: internvit_dense/datasets/imagenet.py; a small synthetic set in those layouts:
``python tools/generate_synthetic_imagenet.py --root data/synthetic_imagenet``.
"""
from __future__ import annotations

import argparse
import json
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout without install

from internvit_dense.datasets.imagenet import VARIANTS  # noqa: E402
from internvit_dense.linear_probe.extract import EXTRACT_SPLITS  # noqa: E402
from internvit_dense.linear_probe.sweep import HOLDOUT_MIN_PER_CLASS, MIN_STEPS  # noqa: E402

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
    e.add_argument('--backbone', default='internvit',
                   help="'internvit' (default), 'timm:NAME' (a timm model; weights from --checkpoint FILE) or "
                        "'hf:DIR' (a local transformers model folder)")
    e.add_argument('--model-kwargs', type=json.loads, default=None,
                   help='timm:NAME only: more arguments for timm.create_model, as JSON (e.g. \'{"img_size": 448}\')')
    g = e.add_mutually_exclusive_group()
    g.add_argument('--checkpoint', help='backbone weights: InternViT in any supported format (.pth, Hugging Face '
                                        'directory), or a local weights file of a timm model')
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
    s.add_argument('--epochs', type=float, default=10,
                   help='epochs of the recipe schedule (default: %(default)s; more on small data, see --min-steps)')
    s.add_argument('--warmup-epochs', type=float, default=1.0, help='warm-up as a share of --epochs (default: 1)')
    s.add_argument('--batch-size', type=int, default=1024,
                   help='(default: %(default)s; on small data it shrinks to 1/8 of the training images, >= 16)')
    s.add_argument('--min-steps', type=int, default=MIN_STEPS,
                   help='optimizer steps the schedule never goes below: small sets get more epochs '
                        '(default: %(default)s)')
    s.add_argument('--steps', type=int, default=None, help='set the number of optimizer steps outright')
    s.add_argument('--holdout', type=float, default=0.02, help='fraction of train held out to choose on')
    s.add_argument('--holdout-min-per-class', type=int, default=HOLDOUT_MIN_PER_CLASS,
                   help='held-out images per class at least (at most half a class; default: %(default)s)')
    s.add_argument('--select-on', choices=['holdout', 'val'], default='holdout',
                   help='choose the probe on held-out training images (default) or on IN-1k val, as DINOv2 does '
                        '(optimistic: the reported number chose the probe; labelled so in every table)')
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

    c = sub.add_parser('compare', help='one table (and a bar plot) of several encoders\' eval results')
    c.add_argument('results', nargs='+', help='cache folders (their sweep/eval.json), folders with eval.json, or the '
                                              'eval.json files')
    c.add_argument('--names', type=_csv(str), default=None, help='row names, comma-separated (default: the encoder '
                                                                 'each cache was extracted from)')
    c.add_argument('--plot', default='work_dirs/linear_probe/compare.png', help='bar plot (default: %(default)s)')
    c.add_argument('--no-paper', action='store_true', help="leave out the InternVL paper's reference rows")
    return p.parse_args(argv)


# ------------------------------------------------------------------- extract
def cmd_extract(args):
    from internvit_dense.linear_probe.extract import ExtractError, run_extract
    from internvit_dense.models.backbones.library_encoders import EncoderLoadError

    try:
        cache = run_extract(
            args.data_root, encoder=args.backbone, checkpoint=args.checkpoint, arch=args.arch,
            random_init=args.random_init, img_size=args.img_size, resize_size=args.resize_size,
            patch_size=args.patch_size, pretrain_size=args.pretrain_size, model_kwargs=args.model_kwargs,
            blocks=args.blocks, splits=args.splits,
            paths=dict(args.path), real_json=args.real_json, train_views=args.train_views,
            cache_root=args.cache_root, name=args.name, batch_size=args.batch_size, chunk_size=args.chunk_size,
            workers=args.workers, device=args.device, precision=args.precision, dtype=args.dtype, seed=args.seed,
            restart=args.restart, progress=not args.quiet)
    except (ExtractError, EncoderLoadError, FileNotFoundError, KeyError) as e:
        raise SystemExit(e.args[0] if e.args else str(e))
    except KeyboardInterrupt:
        raise SystemExit(130)
    print(f'next: python tools/linear_probe.py sweep --cache {cache.root}')


# --------------------------------------------------------------------- sweep
def cmd_sweep(args):
    from internvit_dense.linear_probe.cache import FeatureCache
    from internvit_dense.linear_probe.grid import DEFAULT_LRS
    from internvit_dense.linear_probe.sweep import (OPTIMISTIC, format_sweep_table, resolve_device, resolve_precision,
                                                    run_sweep)

    cache = FeatureCache(args.cache)
    out = args.out or osp.join(cache.root, 'sweep')
    avgpool = dict(both=(False, True), yes=(True,), no=(False,))[args.avgpool]
    device = resolve_device(args.device)
    summary = run_sweep(cache, out, lrs=args.lrs or DEFAULT_LRS, n_lasts=args.n_last, avgpool=avgpool,
                        epochs=args.epochs, warmup_epochs=args.warmup_epochs, batch_size=args.batch_size,
                        holdout=args.holdout, holdout_min_per_class=args.holdout_min_per_class,
                        select_on=args.select_on, min_steps=args.min_steps, steps=args.steps, seed=args.seed,
                        device=device, precision=resolve_precision(args.precision, device), progress=not args.quiet)
    best = summary['best']
    print('\n' + format_sweep_table(summary))
    metric = summary['select_on']
    print(f"\nsweep finished: {summary['num_classifiers']} classifiers in one pass, {summary['train_seconds']:.1f} s")
    chosen_on = (f"{summary['num_holdout']} held-out training images" if metric == 'holdout'
                 else f'IN-1k val ({OPTIMISTIC})')
    print(f"best on {chosen_on}: {best['feature']}, lr {best['lr']:g} per 512 images -> {best[metric]:.2f}% top-1"
          + (f" (IN-1k val {best['val']:.2f}%)" if 'val' in best and metric != 'val' else ''))
    print(f'saved: {osp.join(out, "sweep.json")}, {osp.join(out, "best_classifier.pth")}')
    print(f'next: python tools/linear_probe.py eval --cache {cache.root}' +
          (f' --sweep {out}' if args.out else ''))


# ---------------------------------------------------------------------- eval
def cmd_eval(args):
    from internvit_dense.linear_probe.cache import CacheError, FeatureCache
    from internvit_dense.linear_probe.evaluate import evaluate_variants, format_table, plot_lr_curves, write_json
    from internvit_dense.linear_probe.recipe import check_against_cache, load_recipe_probe
    from internvit_dense.linear_probe.compare import describe_identity
    from internvit_dense.linear_probe.sweep import OPTIMISTIC, SWEEP_JSON, load_best, resolve_device

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
    select_on = (summary or {}).get('select_on', 'holdout' if summary is not None else None)
    if select_on == 'val':
        print(f'\nthe probe was {OPTIMISTIC} (chosen on the number reported above)')
    encoder = describe_identity(cache.identity, osp.basename(cache.root).rsplit('-', 1)[0])
    write_json(json_path, rows, dict(classifier=source, cache=cache.root, feature=clf.spec,
                                     lr=None if clf.lr != clf.lr else clf.lr, recipe_checks=checks, encoder=encoder,
                                     select_on=select_on, optimistic=select_on == 'val'))
    print(f'\nsaved: {json_path}')
    if summary is not None:
        print(f"saved: {plot_lr_curves(summary, osp.join(out, 'accuracy_vs_lr.png'))}")


# ------------------------------------------------------------------- compare
def cmd_compare(args):
    from internvit_dense.linear_probe.compare import compare, format_compare_table, plot_compare

    try:
        rows = compare(args.results, args.names)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(str(e))
    print(format_compare_table(rows, paper=not args.no_paper))
    print(f'\nsaved: {plot_compare(rows, args.plot)}')


def main(argv=None):
    from internvit_dense.engine.cli import setup_entry_point
    setup_entry_point()
    args = parse_args(argv)
    dict(extract=cmd_extract, sweep=cmd_sweep, eval=cmd_eval, compare=cmd_compare)[args.command](args)


if __name__ == '__main__':
    main()
