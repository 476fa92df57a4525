#!/usr/bin/env python
"""What ``linear_probe.py extract`` costs with another library's ViT-L-sized encoder against our InternViT-300M.

    python benchmarks/encoder_extract.py                 # timm DINOv2 ViT-L/14 vs InternViT-300M, 224 px
    python benchmarks/encoder_extract.py --quick         # tiny widths; seconds (smoke test)

Both encoders extract the same images through the same path as the tool (mmcv pipeline,
batches, the feature cache written chunk by chunk; ``extract_split``), in alternating
rounds in one process; the table gives images/s and their ratio. Both are ViT-L-sized
(24 blocks x 1024, MLP 4096, patch 14: 256 tokens at 224 px), random weights (speed does
not depend on them).

It also checks, at full size, that our InternViT-300M and timm's
``vit_intern300m_patch14_448`` (an implementation none of us wrote), given the same weights
in one file, compute the same features: at the checkpoint's own 448 px grid, and at the
224 px crop, where the two resample the position embedding differently (timm:
antialiased bicubic; InternVL and ours: plain bicubic).
"""
from __future__ import annotations

import argparse
import gc
import os.path as osp
import sys
import tempfile

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from common import median_ratio, print_table, rss_mib, time_rounds, write_record  # noqa: E402

VIT_L = 'vit_large_patch14_dinov2.lvd142m'
TINY = dict(embed_dim=64, depth=2, num_heads=4)  # --quick: both encoders at these widths


def build_pair(quick: bool, img_size: int):
    """(our InternViT-300M, timm's ViT-L), frozen, random weights."""
    import torch

    from internvit_dense.models.backbones import InternViT, TimmEncoder

    torch.manual_seed(0)
    arch = dict(embed_dims=TINY['embed_dim'], depth=TINY['depth'], num_heads=TINY['num_heads'], norm_type='layer_norm',
                qk_normalization=False, qkv_bias=True) if quick else '300m'
    ours = InternViT(arch=arch, img_size=img_size, pretrain_size=448, frozen=True).eval()
    timm_l = TimmEncoder(VIT_L, frozen=True, model_kwargs=TINY if quick else None).eval()
    return ours, timm_l


def extract_once(model, paths, labels, img_size: int, batch: int, root: str):
    """One ``extract`` of ``paths`` into a fresh cache (the tool's path, minus argument parsing)."""
    from internvit_dense.linear_probe.cache import FeatureCache
    from internvit_dense.linear_probe.extract import eval_pipeline, extract_split

    cache = FeatureCache(tempfile.mkdtemp(dir=root), dict(blocks=[model.depth - 1], bench=True))
    extract_split(cache, 'in1k', paths, labels, model, eval_pipeline(img_size), batch_size=batch,
                  chunk_size=len(paths), num_workers=0, dtype='float32', progress=False)
    return cache


def agreement(quick: bool, root: str, sizes=(448, 224)) -> dict:
    """Max |difference| (and relative to the features' scale) between our InternViT-300M and timm's
    vit_intern300m_patch14_448 with the same weights, per input size."""
    import torch
    from safetensors.torch import save_file

    from internvit_dense.models.backbones import InternViT, TimmEncoder

    torch.manual_seed(1)
    arch = dict(embed_dims=TINY['embed_dim'], depth=TINY['depth'], num_heads=TINY['num_heads'], norm_type='layer_norm',
                qk_normalization=False, qkv_bias=True) if quick else '300m'
    ours = InternViT(arch=arch, img_size=448, pretrain_size=448, frozen=True).eval()
    path = osp.join(root, 'intern300m.safetensors')
    save_file({k: v.contiguous() for k, v in ours.state_dict().items()}, path)
    images = torch.randn(1, 3, 448, 448, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = {s: ours.get_intermediate_layers(torch.nn.functional.interpolate(images, size=s, mode='bilinear'),
                                                n=[0, -1], return_class_token=True) for s in sizes}
    del ours
    gc.collect()
    theirs = TimmEncoder('vit_intern300m_patch14_448', checkpoint=path, frozen=True,
                         model_kwargs=TINY if quick else None)
    theirs.init_weights()
    out = {}
    with torch.no_grad():
        for s in sizes:
            got = theirs.get_intermediate_layers(torch.nn.functional.interpolate(images, size=s, mode='bilinear'),
                                                 n=[0, -1], return_class_token=True)
            diff = max(float((g - w).abs().max()) for gp, wp in zip(got, want[s]) for g, w in zip(gp, wp))
            scale = max(float(w.abs().max()) for wp in want[s] for w in wp)
            out[s] = dict(max_abs_diff=diff, relative=diff / scale)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--images', type=int, default=32, help='images per extraction (default: %(default)s)')
    p.add_argument('--batch', type=int, default=16)
    p.add_argument('--img-size', type=int, default=224)
    p.add_argument('--rounds', type=int, default=3)
    p.add_argument('--threads', type=int, default=None)
    p.add_argument('--quick', action='store_true', help='tiny widths, few images: a smoke test')
    p.add_argument('--json', help='where the record goes (default: work_dirs/benchmark/encoder_extract-<time>.json)')
    args = p.parse_args(argv)
    if args.quick:
        args.images, args.batch, args.rounds = min(args.images, 8), min(args.batch, 4), min(args.rounds, 2)

    import torch

    from internvit_dense.datasets.imagenet import list_split, train_wnids
    from internvit_dense.datasets.synthetic_imagenet import generate_synthetic_imagenet

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix='encoder_extract-') as root:
        data = osp.join(root, 'data')
        per_class = -(-args.images // 4)
        generate_synthetic_imagenet(data, num_classes=4, train_per_class=1, val_per_class=per_class,
                                    variant_per_class=1, size=(256, 320), progress=False)
        items = list_split(osp.join(data, 'imagenet-1k', 'val'), train_wnids(data))[:args.images]
        paths, labels = [p for p, _ in items], [lab for _, lab in items]

        ours, timm_l = build_pair(args.quick, args.img_size)
        params = {n: sum(p.numel() for p in m.parameters()) for n, m in (('ours', ours), ('timm', timm_l))}
        print(f'{len(paths)} images at {args.img_size} px, batch {args.batch}, {torch.get_num_threads()} threads; '
              f'InternViT-300M {params["ours"] / 1e6:.0f}M parameters, timm {VIT_L} {params["timm"] / 1e6:.0f}M; '
              f'RSS {rss_mib():.0f} MiB')
        seconds = time_rounds({
            'InternViT-300M (ours)': lambda: extract_once(ours, paths, labels, args.img_size, args.batch, root),
            f'timm {VIT_L}': lambda: extract_once(timm_l, paths, labels, args.img_size, args.batch, root),
        }, rounds=args.rounds, warmup=1)
        del ours, timm_l
        gc.collect()
        names = list(seconds)
        ips = {n: len(paths) / min(s) for n, s in seconds.items()}
        ratio = median_ratio(seconds[names[1]], seconds[names[0]])  # timm seconds / ours: > 1 means ours is faster
        print()
        print_table(['encoder', 'parameters', 'images/s (best round)', 'seconds per round'],
                    [[n, f"{params['ours' if i == 0 else 'timm'] / 1e6:.0f}M", f'{ips[n]:.2f}',
                      ', '.join(f'{s:.2f}' for s in seconds[n])] for i, n in enumerate(names)])
        print(f'\nextract images/s: InternViT-300M (ours) / timm {VIT_L} = {ratio:.2f}x '
              '(median of the per-round ratios)')

        agree = agreement(args.quick, root)
        print('\nour InternViT-300M vs timm vit_intern300m_patch14_448, same weights (first and last blocks, cls + patch tokens):')
        for size, a in agree.items():
            note = 'the checkpoint grid' if size == 448 else 'position embedding resampled (timm antialiased)'
            print(f'  {size} px ({note}): max |diff| {a["max_abs_diff"]:.2e} ({a["relative"]:.2e} of the '
                  'largest feature)')
        path = write_record(dict(images=len(paths), img_size=args.img_size, batch=args.batch, quick=args.quick,
                                 seconds=seconds, images_per_second=ips, ratio_ours_over_timm=ratio,
                                 parameters=params, agreement={str(k): v for k, v in agree.items()}),
                            args.json, 'encoder_extract')
        print(f'\nrecord: {path}')


if __name__ == '__main__':
    main()
