#!/usr/bin/env python
"""What a grid of N linear probes costs per pass over the feature cache, against one probe.

    python benchmarks/linear_probe.py                  # 1024-d features, 1000 classes, 8 lrs x 4 features
    python benchmarks/linear_probe.py --dim 3200 --images 4096 --cold
    python benchmarks/linear_probe.py --precision bf16 --backbone 300m   # + a real backbone in the pass
    python benchmarks/linear_probe.py --quick          # seconds; smoke test

It writes a cache of random features (the same files ``extract`` writes), then times
full training passes (epochs) of

* one probe: the recipe's feature ([cls || mean patch] of the last block), one learning rate;
* the sweep's grid: {last 1, last 4 blocks} x {with, without mean patch} x ``--lrs`` learning rates;
* reading alone: the pass without any classifier (memory map -> float32 tensors).

With ``--cold`` the cache files are evicted from the page cache before every pass
(``posix_fadvise(DONTNEED)``), as when a 6B cache of ImageNet (tens of GB) does not
fit in memory and every pass reads the disk.

With ``--backbone 300m`` (or ``tiny``) it also times passes in which a real InternViT
(random weights, ``--backbone-precision``) computes the features of every batch, DINOv2's
setting without a cache: one probe vs the grid on the same backbone outputs.

The grid shares reading, conversion and batch normalisation; its GEMMs cannot be
shared (every classifier has its own weights), so the ratio grid / one probe is set by
how much of a pass is shared work: over a warm cache almost nothing is, with a backbone
in the pass almost everything is. The script prints the measured ratios and the analytic
FLOP ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import statistics
import sys
import tempfile
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout without install

import numpy as np  # noqa: E402
import torch  # noqa: E402

from internvit_dense.linear_probe.cache import FeatureCache, array_name  # noqa: E402
from internvit_dense.linear_probe.grid import (PRECISIONS, RECIPE_SPEC, LinearGrid, feature_batches,  # noqa: E402
                                               make_optimizer, make_specs, train_grid)

# Backbone forward FLOPs per image, 2 x parameters x tokens (attention's N^2 term added below).
BACKBONES = {'6b': dict(params=5.9e9, dim=3200, depth=48), '300m': dict(params=0.3e9, dim=1024, depth=24)}


def build_cache(root: str, images: int, dim: int, blocks: int, classes: int, chunk: int = 4096) -> FeatureCache:
    identity = dict(checkpoint=dict(kind='benchmark'), dim=dim, blocks=list(range(blocks)))
    cache = FeatureCache(root, identity)
    rng = np.random.default_rng(0)
    labels = rng.integers(classes, size=images)
    cache.prepare_split('train', [f'img{i}' for i in range(images)], labels.tolist(), dim, chunk_size=chunk)
    for c in cache.pending_chunks('train'):
        rows = cache.chunk_rows('train', c)
        cache.write_chunk('train', c, {k: rng.standard_normal((len(rows), dim), dtype=np.float32)
                                       for k in cache.keys()})
    cache.close()
    return cache


def evict(cache: FeatureCache) -> None:
    d = osp.join(cache.root, 'train')
    for f in os.listdir(d):
        fd = os.open(osp.join(d, f), os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def time_pass(cache: FeatureCache, make_grid, batch: int, cold: bool, device: torch.device) -> float:
    if cold:
        evict(cache)
    source = cache.load('train')  # fresh memory maps: nothing mapped from the previous pass
    images = np.arange(source.num_images)
    start = time.perf_counter()
    if make_grid is None:  # reading only
        keys = cache.keys()
        for arrays, labels, _ in feature_batches(source, images, keys, batch, np.random.default_rng(0),
                                                 drop_last=True, device=device):
            pass
    else:
        train_grid(make_grid(), source, images, steps=len(images) // batch, warmup_steps=len(images) // batch // 2,
                   batch_size=batch, progress=False)
    elapsed = time.perf_counter() - start
    del source
    return elapsed


BACKBONE_ARCHS = {'tiny': 'tiny', '300m': '300m'}


def time_backbone_pass(model, make_grid, images: int, batch: int, classes: int, blocks: int, dtype,
                       img_size: int = 224) -> float:
    """One pass in which ``model`` computes every batch's features (cls + mean patch of its last
    ``blocks`` blocks) and the classifiers of ``make_grid()`` train on them."""
    grid = make_grid()
    optimizer = make_optimizer(grid, batch)
    gen = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for _ in range(images // batch):
        pixels = torch.randn(batch, 3, img_size, img_size, generator=gen).to(dtype)
        with torch.no_grad():
            outs = model.get_intermediate_layers(pixels, n=blocks, return_class_token=True)
        arrays = {}
        for b, (patches, cls_tok) in enumerate(outs):
            arrays[('cls', b)], arrays[('patch', b)] = cls_tok.float(), patches.float().mean(dim=1)
        labels = torch.randint(classes, (batch,), generator=gen)
        optimizer.zero_grad(set_to_none=True)
        grid.loss(grid(arrays, train=True), labels)[0].backward()
        optimizer.step()
    return time.perf_counter() - start


def head_flops(specs, lrs: int, dim: int, classes: int) -> float:
    """Per image: logits and weight gradient, two GEMMs (features need no gradient)."""
    return sum(2 * 2 * dim * (s.n_last + s.avgpool) * classes * lrs for s in specs)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--dim', type=int, default=1024, help='backbone width (default: %(default)s; 6B: 3200)')
    p.add_argument('--classes', type=int, default=1000)
    p.add_argument('--images', type=int, default=4096, help='images per pass (default: %(default)s)')
    p.add_argument('--blocks', type=int, default=4)
    p.add_argument('--lrs', type=int, default=8, help='learning rates in the grid (default: %(default)s)')
    p.add_argument('--batch', type=int, default=1024)
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--cold', action='store_true', help='evict the cache from the page cache before each pass')
    p.add_argument('--device', default='cpu')
    p.add_argument('--precision', choices=PRECISIONS, default='fp32',
                   help="the classifiers' GEMMs (default: %(default)s; bf16 is fast where the CPU has AMX)")
    p.add_argument('--threads', type=int, default=None,
                   help="torch CPU threads (default: torch's); 1 avoids OpenMP thrashing on a shared machine")
    p.add_argument('--backbone', choices=['none', 'tiny', '300m'], default='none',
                   help='also time passes that run this backbone on every batch (300m: minutes on a CPU)')
    p.add_argument('--backbone-images', type=int, default=64, help='images per backbone pass (default: %(default)s)')
    p.add_argument('--backbone-batch', type=int, default=32,
                   help='images per step (default: %(default)s; the recipe steps on 1024: the grid updates its '
                        'weights once per step, whatever the batch, so the ratio falls as the batch grows)')
    p.add_argument('--backbone-precision', choices=['fp32', 'bf16'], default='bf16')
    p.add_argument('--quick', action='store_true', help='small sizes, one repeat')
    p.add_argument('--json', help='also write the results here')
    args = p.parse_args(argv)
    if args.quick:
        args.dim, args.classes, args.images, args.batch, args.repeats, args.lrs = 64, 100, 2048, 256, 1, 4
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    blocks = list(range(args.blocks))
    grid_specs = make_specs((1, args.blocks), (False, True))
    n_grid = len(grid_specs) * args.lrs

    def single(spec=RECIPE_SPEC):
        return lambda: LinearGrid([spec], [0.1], blocks, args.dim, args.classes,
                                  precision=args.precision).to(device)

    def grid():
        return LinearGrid(grid_specs, np.geomspace(0.005, 1.0, args.lrs), blocks, args.dim, args.classes,
                          precision=args.precision).to(device)

    print(f'benchmark: {args.images} images x {args.blocks} blocks x {args.dim}-d (cls + mean patch, float16 on '
          f'disk), {args.classes} classes, batch {args.batch}, {args.precision} GEMMs, {torch.get_num_threads()} threads '
          f'on {device}, '
          f'{"cold (page cache evicted before each pass)" if args.cold else "warm page cache"}')
    with tempfile.TemporaryDirectory(prefix='lp_bench_') as tmp:
        cache = build_cache(osp.join(tmp, 'cache'), args.images, args.dim, args.blocks, args.classes)
        size_mb = sum(osp.getsize(osp.join(cache.root, 'train', array_name(*k))) for k in cache.keys()) / 2**20
        # One probe per feature too: training the grid's classifiers one by one costs, per learning
        # rate, one pass of each feature's probe (their widths differ: 1, 2, 4, 5 x dim).
        runs = dict(reading=None, grid=grid, **{f'one:{s.name}': single(s) for s in grid_specs})
        times = {name: [] for name in runs}
        for name, factory in runs.items():  # one untimed pass each: allocator, threads, page cache
            time_pass(cache, factory, args.batch, args.cold, device)
        for _ in range(args.repeats):
            for name, factory in runs.items():  # interleaved, so load from other processes hits all alike
                times[name].append(time_pass(cache, factory, args.batch, args.cold, device))
    t = {name: statistics.median(v) for name, v in times.items()}
    t['one'] = t[f'one:{RECIPE_SPEC.name}']  # the reference: the recipe's probe

    ratio = t['grid'] / t['one']
    separate = args.lrs * sum(t[f'one:{s.name}'] for s in grid_specs)
    flop_ratio = head_flops(grid_specs, args.lrs, args.dim, args.classes) / head_flops([RECIPE_SPEC], 1, args.dim,
                                                                                      args.classes)
    print(f'\ncache: {size_mb:.0f} MB')
    print(f"{'pass':<44}{'classifiers':>12}{'s / pass':>10}{'x one probe':>13}")
    print(f"{'reading only (memory map -> float32)':<44}{0:>12}{t['reading']:>10.3f}"
          f"{t['reading'] / t['one']:>13.2f}")
    for spec in grid_specs:
        v = t[f'one:{spec.name}']
        label = f'one probe ({spec.name}, 1 lr)' + (' = recipe' if spec == RECIPE_SPEC else '')
        print(f"{label:<44}{1:>12}{v:>10.3f}{v / t['one']:>13.2f}")
    print(f"{f'{n_grid} probes one by one ({args.lrs} lrs x the 4 above)':<44}{n_grid:>12}{separate:>10.3f}"
          f"{separate / t['one']:>13.2f}")
    print(f"{f'grid ({len(grid_specs)} features x {args.lrs} lrs), one pass':<44}{n_grid:>12}{t['grid']:>10.3f}"
          f"{ratio:>13.2f}")
    print(f'\ngrid of {n_grid} classifiers = {ratio:.2f}x one classifier per pass over the cache '
          f'(head FLOPs: {flop_ratio:.0f}x); training them one by one takes {separate / t["one"]:.1f}x, '
          f'so the one-pass grid is {separate / t["grid"]:.2f}x faster than that.')
    bb_lines = []
    for name, bb in BACKBONES.items():
        tokens = 1 + (224 // 14) ** 2
        fwd = 2 * bb['params'] * tokens + 4 * bb['depth'] * tokens ** 2 * bb['dim']
        one = head_flops([RECIPE_SPEC], 1, bb['dim'], 1000)
        many = head_flops(grid_specs, args.lrs, bb['dim'], 1000)
        bb_lines.append((name, (fwd + many) / (fwd + one)))
    print('with the backbone run in every pass instead (no cache, 224 px, 1000 classes), analytic FLOPs: '
          + ', '.join(f'{n}: grid = {r:.3f}x one probe' for n, r in bb_lines))
    measured_bb = None
    if args.backbone != 'none':
        measured_bb = backbone_ratio(args, grid_specs, blocks)
        per_image = measured_bb['seconds']['one'] / measured_bb['images']
        if args.backbone == '300m' and args.dim == 1024:  # the cache passes above had the 300M's width
            print(f"per image and pass: the {n_grid}-classifier grid over the cache {1e3 * t['grid'] / args.images:.2f}"
                  f" ms; one probe with the 300M backbone in the pass (the recipe through tools/train.py) "
                  f"{1e3 * per_image:.1f} ms: the cached grid costs {t['grid'] / args.images / per_image:.3f}x that")
    if ratio > 1.2:
        print(f'note: over a cache the heads dominate here ({t["reading"] / t["one"]:.0%} of a one-probe pass is '
              'reading); every classifier has its own GEMMs, so the grid approaches 1x one probe only where work '
              'it shares dominates a pass: reading a cache that streams from disk, or a backbone run in the pass.')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(vars(args), seconds=t, all_seconds=times, ratio=ratio, one_by_one_seconds=separate,
                           head_flop_ratio=flop_ratio,
                           cache_mb=size_mb, with_backbone=dict(bb_lines), measured_with_backbone=measured_bb),
                      f, indent=1)
        print(f'saved: {args.json}')


def backbone_ratio(args, grid_specs, blocks) -> dict:
    from internvit_dense.models.backbones import InternViT

    dtype = dict(fp32=torch.float32, bf16=torch.bfloat16)[args.backbone_precision]
    torch.manual_seed(0)
    model = InternViT(arch=BACKBONE_ARCHS[args.backbone], img_size=224, frozen=True).eval().to(dtype)
    dim = model.embed_dims
    runs = dict(
        one=lambda: LinearGrid([RECIPE_SPEC], [0.1], blocks, dim, args.classes, precision=args.precision),
        grid=lambda: LinearGrid(grid_specs, np.geomspace(0.005, 1.0, args.lrs), blocks, dim, args.classes,
                                precision=args.precision))
    n = args.backbone_images // args.backbone_batch * args.backbone_batch
    print(f'\nwith the backbone in the pass: InternViT {args.backbone} ({model.depth} blocks x {dim}-d, '
          f'{args.backbone_precision}, random weights), {n} images of 224 px per pass, batch {args.backbone_batch}')
    times = {name: [] for name in runs}
    for name, factory in runs.items():  # untimed warm-up pass each
        time_backbone_pass(model, factory, args.backbone_batch, args.backbone_batch, args.classes, len(blocks), dtype)
    for r in range(args.repeats):
        for name, factory in runs.items():
            times[name].append(time_backbone_pass(model, factory, n, args.backbone_batch, args.classes,
                                                  len(blocks), dtype))
            print(f'  round {r + 1}/{args.repeats}: backbone + {name}: {times[name][-1]:.2f} s', flush=True)
    t = {name: statistics.median(v) for name, v in times.items()}
    n_grid = len(grid_specs) * args.lrs
    print(f"{'backbone + one probe (recipe)':<44}{1:>12}{t['one']:>10.3f}{1:>13.2f}")
    print(f"{'backbone + grid, one pass':<44}{n_grid:>12}{t['grid']:>10.3f}{t['grid'] / t['one']:>13.3f}")
    print(f"grid of {n_grid} classifiers = {t['grid'] / t['one']:.3f}x one classifier per pass with the backbone "
          f'in the pass (measured, batch {args.backbone_batch})')
    return dict(backbone=args.backbone, precision=args.backbone_precision, images=n, seconds=t, all_seconds=times,
                ratio=t['grid'] / t['one'])


if __name__ == '__main__':
    main()
