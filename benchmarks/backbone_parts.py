#!/usr/bin/env python
"""What each of the backbone's hand-made fast paths buys, against the path it replaced, same inputs, same run.

Forward + backward (a training step's share) at a preset's real width, in alternating rounds (benchmarks/common.py):
  patch embedding: ours (PatchEmbedGemm, one GEMM over the patches) against timm's PatchEmbed (a strided conv),
    same weights; the images need no gradient, the weights do (a full-tuning step);
  RMSNorm: ours (RmsNormFp32StatsFunction, its backward written out) against the same arithmetic through
    torch's rms_norm and autograd (what RmsNormFp32Stats ran before), on one block's tokens (B x (1 + h*w) x C).
Both pairs are checked to compute the same thing before they are timed (max |difference| printed).

    python benchmarks/backbone_parts.py                        # InternViT-6B width, 4 x 224, bf16
    python benchmarks/backbone_parts.py --batch 1 --img-size 448
    python benchmarks/backbone_parts.py --quick                # the tiny width, seconds: a smoke test
"""
import argparse
import os.path as osp
import statistics
import sys

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from common import (PATCH, add_image_arguments, add_timing_arguments, median_ratio, parse_image_arguments,  # noqa: E402
                    print_table, time_rounds, write_record)

import torch  # noqa: E402

QUICK = dict(arch='tiny', img_size=56, batch=2, rounds=3, repeats=1)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--arch', default='6b', help="an InternViT preset with RMSNorm: '6b', '6b-448', 'tiny'")
    add_image_arguments(p, dtype='bf16', quick=QUICK)
    add_timing_arguments(p, rounds=7, repeats=3)
    return parse_image_arguments(p, argv, QUICK)


def forward_backward(fn, inputs, params, grad):
    def step():
        out = fn(*inputs)
        out.backward(grad)
        for t in list(inputs) + list(params):
            t.grad = None
    return step


def patch_embedding(args, dims, dtype):
    from timm.layers import PatchEmbed

    from internvit_dense.models.backbones.internvit import PatchEmbedGemm
    kw = dict(img_size=args.img_size, patch_size=PATCH, in_chans=3, embed_dim=dims, strict_img_size=False,
              dynamic_img_pad=False)
    conv = PatchEmbed(**kw).to(dtype)
    gemm = PatchEmbedGemm(**kw).to(dtype)
    gemm.load_state_dict(conv.state_dict())
    x = torch.randn(args.batch, 3, args.img_size, args.img_size, generator=torch.Generator().manual_seed(0))
    x = x.to(dtype)
    grad = torch.randn(args.batch, (args.img_size // PATCH) ** 2, dims).to(dtype)
    with torch.no_grad():
        diff = (gemm(x).float() - conv(x).float()).abs().max().item()
    return (forward_backward(gemm, (x,), list(gemm.parameters()), grad),
            forward_backward(conv, (x,), list(conv.parameters()), grad), diff)


def rms_norm(args, dims, eps, dtype):
    from internvit_dense.models.backbones.internvit import make_norm, rms_norm_through_autograd
    norm = make_norm('rms_norm', dims, eps).to(dtype)
    gen = torch.Generator().manual_seed(1)
    tokens = (args.batch, (args.img_size // PATCH) ** 2 + 1, dims)
    x = torch.randn(*tokens, generator=gen).to(dtype).requires_grad_()
    grad = torch.randn(*tokens, generator=gen).to(dtype)

    def autograd_composite(t):  # as RmsNormFp32Stats ran before, and still runs on a GPU
        return rms_norm_through_autograd(t, norm.weight, eps)

    with torch.no_grad():
        diff = (norm(x).float() - autograd_composite(x).float()).abs().max().item()
    return (forward_backward(norm, (x,), [norm.weight], grad),
            forward_backward(autograd_composite, (x,), [norm.weight], grad), diff)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from internvit_dense.models.backbones.internvit import resolve_arch, resolve_dtype
    arch = resolve_arch(args.arch)
    if arch['norm_type'] != 'rms_norm':
        raise SystemExit(f"--arch {args.arch} has {arch['norm_type']}, not RMSNorm: use '6b', '6b-448' or 'tiny'")
    dtype = resolve_dtype(args.dtype)
    dims = arch['embed_dims']
    print(f"backbone parts: InternViT {args.arch} width ({dims}), {args.img_size}px, batch {args.batch}, "
          f'{args.dtype}, {args.threads} threads; forward + backward of each', flush=True)
    ours_patch, theirs_patch, patch_diff = patch_embedding(args, dims, dtype)
    ours_norm, theirs_norm, norm_diff = rms_norm(args, dims, arch['layer_norm_eps'], dtype)
    print(f'max |ours - replaced| forward: patch embedding {patch_diff:.2e}, RMSNorm {norm_diff:.2e}', flush=True)
    sec = time_rounds({'patch/gemm': ours_patch, 'patch/conv': theirs_patch, 'rms/function': ours_norm,
                       'rms/autograd': theirs_norm}, args.rounds, repeats=args.repeats)
    rows, summary = [], {}
    for label, ours, replaced in [('patch embedding', 'patch/gemm', 'patch/conv'),
                                  ('RMSNorm (one of 4 per block)', 'rms/function', 'rms/autograd')]:
        ratio = median_ratio(sec[replaced], sec[ours])
        summary[label] = ratio
        ms = [f'{statistics.median(sec[name]) * 1e3:.2f}' for name in (ours, replaced)]
        rows.append([label, *ms, f'{ratio:.3f}x', ' '.join(f'{r / o:.2f}' for o, r in zip(sec[ours], sec[replaced]))])
    print(f'\nSUMMARY  forward + backward, ms (median of {args.rounds} rounds, each the fastest of {args.repeats} '
          'calls); speed-up = median of per-round ratios (replaced / ours)')
    print_table(['part', 'ours ms', 'replaced ms', 'speed-up', 'per round'], rows)
    path = write_record(dict(config=vars(args), max_abs_diff=dict(patch=patch_diff, rms=norm_diff), seconds=sec,
                             speedup=summary), args.json, name='backbone_parts')
    print(f'record: {path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
