#!/usr/bin/env python
"""Speed and memory of our InternViT against transformers' InternVLVisionModel, same weights, same run.

Measured, in alternating rounds (benchmarks/common.py):
  forward (eval, no grad), ours and transformers';
  a training step (forward, per-patch linear head, cross-entropy, backward, SGD): ours full and
  transformers' full, and ours with the backbone frozen (only the head learns);
  torch.mm at the model's largest GEMM (fc1), this machine's dense-matmul rate, against which the
  forward's analytic FLOP rate is compared under the same load.
The targets these figures are held to are in docs/benchmarks.md.

    python benchmarks/backbone_speed.py                 # 300M shape, 224px, batch 4, fp32
    python benchmarks/backbone_speed.py --dtype bf16 --batch 8
    python benchmarks/backbone_speed.py --quick         # the tiny model, seconds: a smoke test
    python benchmarks/backbone_speed.py --compile       # also ours with compile=True (torch.compile of the blocks)
    python benchmarks/backbone_speed.py --profile 4     # then where a full training step's time goes, op by op
    python benchmarks/backbone_speed.py --arch 6b --depth 2 --dtype bf16 --batch 1 --img-size 448
                                                        # InternViT-6B's real width on a 2-block slice
"""
import argparse
import os.path as osp
import statistics
import sys
import tempfile
import time

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from common import (PATCH, add_image_arguments, add_timing_arguments, extra_peak_mib, median_ratio,  # noqa: E402
                    parse_image_arguments, print_table, time_rounds, write_record)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

NUM_CLASSES = 16  # of the per-patch head of the training steps
QUICK = dict(arch='tiny', img_size=56, batch=2, rounds=3)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--arch', default='300m', help="an InternViT preset: '300m', '6b', '6b-448', 'tiny'")
    p.add_argument('--depth', type=int, default=None,
                   help="blocks to build (default: the preset's): the preset's real width on fewer blocks, so "
                        "that the 6B width is measurable on any machine (every block costs the same)")
    add_image_arguments(p, dtype='fp32', quick=QUICK)
    p.add_argument('--allocator', choices=('keep', 'os'), default='keep',
                   help="'keep': freed memory stays in the process, as tools/train.py runs; 'os': glibc's default")
    p.add_argument('--compile', action='store_true',
                   help='also time ours built with compile=True (forward and full step), and its compile time')
    p.add_argument('--profile', type=int, default=0, metavar='STEPS',
                   help='then profile this many full training steps of each (alternating) and print the ops\' '
                        'self CPU time per step side by side: where the time goes')
    add_timing_arguments(p, rounds=5, repeats=1)
    args = parse_image_arguments(p, argv, QUICK)
    if args.depth is not None and args.depth < 1:
        p.error(f'--depth must be at least 1, got {args.depth}')
    return args


def arch_of(args) -> dict:
    """The preset's architecture, with ``--depth`` blocks where given."""
    from internvit_dense.models.backbones.internvit import resolve_arch
    arch = resolve_arch(args.arch)
    if args.depth is not None:
        arch['depth'] = args.depth
    return arch


def forward_flops(arch: dict, img_size: int) -> float:
    """Forward FLOPs per image (2 per multiply-add) of the patch embedding and every block's matmuls;
    the element-wise ops are a fraction of a percent at these widths."""
    c, m = arch['embed_dims'], arch['mlp_dims']
    patches = (img_size // PATCH) ** 2
    t = patches + 1
    block = 2 * t * c * 3 * c + 4 * t * t * c + 2 * t * c * c + 4 * t * c * m
    return float(2 * patches * 3 * PATCH ** 2 * c + arch['depth'] * block)


def build(args, workdir):
    """Ours with random weights, saved in transformers' layout and loaded by transformers."""
    from transformers import InternVLVisionModel

    from internvit_dense.checkpoint import FORMAT_TRANSFORMERS, save_checkpoint
    from internvit_dense.models.backbones import InternViT
    from internvit_dense.models.backbones.internvit import resolve_dtype
    dtype = resolve_dtype(args.dtype)
    torch.manual_seed(0)
    kw = dict(arch=arch_of(args), img_size=args.img_size, patch_size=PATCH, pretrain_size=args.img_size)
    ours = InternViT(**kw).eval()
    save_checkpoint(ours, osp.join(workdir, 'transformers'), fmt=FORMAT_TRANSFORMERS)
    theirs = InternVLVisionModel.from_pretrained(osp.join(workdir, 'transformers'), attn_implementation='sdpa')
    theirs = theirs.eval()
    frozen = InternViT(**kw, frozen=True)
    frozen.load_state_dict(ours.state_dict())
    compiled = None
    if args.compile:
        compiled = InternViT(**kw, compile=True)
        compiled.load_state_dict(ours.state_dict())
        compiled = compiled.to(dtype)
    x = torch.randn(1, 3, args.img_size, args.img_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        diff = (ours.forward_features(x) - theirs(pixel_values=x).last_hidden_state).abs().max().item()
    return ours.to(dtype), theirs.to(dtype), frozen.to(dtype), compiled, diff, dtype


def candidates(args, ours, theirs, frozen, compiled, dtype):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch, 3, args.img_size, args.img_size, generator=gen).to(dtype)
    labels = torch.randint(0, NUM_CLASSES, (args.batch * (args.img_size // PATCH) ** 2,), generator=gen)

    def ours_tokens(model):
        return lambda: model(x)[-1].flatten(2).transpose(1, 2)

    def theirs_tokens():
        return theirs(pixel_values=x).last_hidden_state[:, 1:]

    def train_step(model, tokens):
        head = torch.nn.Linear(ours.embed_dims, NUM_CLASSES).to(dtype)
        params = [p for p in list(model.parameters()) + list(head.parameters()) if p.requires_grad]
        opt = torch.optim.SGD(params, lr=1e-4)  # the cheapest optimizer: the step measures the model

        def step():
            model.train()
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(head(tokens()).reshape(-1, NUM_CLASSES).float(), labels)
            loss.backward()
            opt.step()
            if not torch.isfinite(loss):
                raise RuntimeError(f'non-finite training loss {loss.item()}')
        return step

    def no_grad(fn):
        def run():
            with torch.no_grad():
                fn()
        return run

    a = ours.arch
    m, k, n = args.batch * ((args.img_size // PATCH) ** 2 + 1), a['embed_dims'], a['mlp_dims']
    mm_x, mm_w = torch.randn(m, k).to(dtype), torch.randn(n, k).to(dtype)
    cands = {
        'forward/ours': no_grad(lambda: ours.eval()(x)),
        'forward/transformers': no_grad(lambda: theirs.eval()(pixel_values=x)),
        'train-full/ours': train_step(ours, ours_tokens(ours)),
        'train-full/transformers': train_step(theirs, theirs_tokens),
        'train-frozen/ours': train_step(frozen, ours_tokens(frozen)),
        'matmul': lambda: torch.mm(mm_x, mm_w.t()),  # the nn.Linear layout of fc1
    }
    if compiled is not None:
        cands['forward/ours-compiled'] = no_grad(lambda: compiled.eval()(x))
        cands['train-full/ours-compiled'] = train_step(compiled, ours_tokens(compiled))
    return cands, 2.0 * m * k * n


def profile_steps(cands, steps: int, shown: int = 16) -> dict:
    """{op: [ours ms, transformers' ms]} of self CPU time per full training step (torch's profiler, ``steps`` of
    each, alternating), printed as a table of the ops that take longest in either, with their difference."""
    from torch.profiler import ProfilerActivity, profile
    names = ('train-full/ours', 'train-full/transformers')
    per_step = {}
    print(f'profiling {steps} full training steps of each', flush=True)
    for i in range(steps):
        for col, name in (enumerate(names) if i % 2 == 0 else reversed(list(enumerate(names)))):
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                cands[name]()
            for event in prof.key_averages():
                per_step.setdefault(event.key, [0.0, 0.0])[col] += event.self_cpu_time_total / 1e3 / steps
    totals = [sum(v[c] for v in per_step.values()) for c in (0, 1)]
    top = sorted(per_step, key=lambda k: -max(per_step[k]))[:shown]
    print(f'\nself CPU time per full training step, ms (torch profiler, {steps} steps each): ours {totals[0]:.1f}, '
          f'transformers {totals[1]:.1f}')
    print_table(['op', 'ours ms', 'transformers ms', 'ours - transformers'],
                [[k[:60], f'{per_step[k][0]:.1f}', f'{per_step[k][1]:.1f}', f'{per_step[k][0] - per_step[k][1]:+.1f}']
                 for k in top])
    return dict(per_step_ms=per_step, total_ms=totals)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.allocator == 'keep':
        from internvit_dense.engine.workarounds import keep_freed_memory_on_cpu
        keep_freed_memory_on_cpu()
    blocks = '' if args.depth is None else f' ({args.depth} block{"s" * (args.depth != 1)})'
    print(f'backbone speed: InternViT {args.arch}{blocks}, {args.img_size}px, batch {args.batch}, {args.dtype}, '
          f'{args.threads} threads, allocator {args.allocator}', flush=True)
    with tempfile.TemporaryDirectory(prefix='internvit-bench-') as workdir:
        ours, theirs, frozen, compiled, diff, dtype = build(args, workdir)
        params = sum(p.numel() for p in ours.parameters())
        print(f'{params / 1e6:.1f}M params; on one image in fp32 max |ours - transformers| = {diff:.2e}', flush=True)
        cands, mm_flop = candidates(args, ours, theirs, frozen, compiled, dtype)
        first_call = {}
        for name in [n for n in cands if n.endswith('-compiled')]:  # compiles: not inside the profiler below
            start = time.perf_counter()
            cands[name]()
            first_call[name] = time.perf_counter() - start
            print(f'{name}: first call (compiles) {first_call[name]:.1f} s', flush=True)
        print('memory of one call of each (torch profiler memory events)', flush=True)
        peaks = {name: extra_peak_mib(fn) for name, fn in cands.items() if name != 'matmul'}
        print(f'timing {len(cands)} candidates in {args.rounds} alternating rounds'
              f'{f", the fastest of {args.repeats} calls each" if args.repeats > 1 else ""}', flush=True)
        sec = time_rounds(cands, args.rounds, repeats=args.repeats)
        ops = profile_steps(cands, args.profile) if args.profile else None

    ips = {n: args.batch / statistics.median(s) for n, s in sec.items() if n != 'matmul'}
    flop_img = forward_flops(ours.arch, args.img_size)
    mm_gflops = mm_flop / statistics.median(sec['matmul']) / 1e9
    fwd_share = statistics.median(args.batch * flop_img / f / (mm_flop / m)
                                  for f, m in zip(sec['forward/ours'], sec['matmul']))
    summary = dict(
        forward_ratio=median_ratio(sec['forward/transformers'], sec['forward/ours']),
        train_full_ratio=median_ratio(sec['train-full/transformers'], sec['train-full/ours']),
        frozen_step_cost=median_ratio(sec['train-frozen/ours'], sec['forward/ours']),
        forward_share_of_matmul_rate=fwd_share, matmul_gflops=mm_gflops)
    if args.compile:
        summary.update(
            compiled_forward_ratio=median_ratio(sec['forward/transformers'], sec['forward/ours-compiled']),
            compiled_train_full_ratio=median_ratio(sec['train-full/transformers'], sec['train-full/ours-compiled']),
            compiled_over_eager_forward=median_ratio(sec['forward/ours'], sec['forward/ours-compiled']),
            compiled_over_eager_train_full=median_ratio(sec['train-full/ours'], sec['train-full/ours-compiled']),
            compile_seconds={n: first_call[n] - statistics.median(sec[n]) for n in first_call})

    print(f'\nSUMMARY  InternViT {args.arch}{blocks}, {params / 1e6:.1f}M params, {args.img_size}px, '
          f'batch {args.batch}, {args.dtype}: images/s (median of {args.rounds} rounds'
          f'{f", each the fastest of {args.repeats} calls" if args.repeats > 1 else ""}), '
          'ratio = median of per-round ratios')
    rows = []
    measured = [('forward (eval, no grad)', 'forward', 'ours', summary['forward_ratio']),
                ('train step, full', 'train-full', 'ours', summary['train_full_ratio']),
                ('train step, frozen', 'train-frozen', 'ours', None)]
    if args.compile:
        measured += [('forward, compiled', 'forward', 'ours-compiled', summary['compiled_forward_ratio']),
                     ('train step, full, compiled', 'train-full', 'ours-compiled',
                      summary['compiled_train_full_ratio'])]
    for label, key, who, ratio in measured:
        theirs_ips = ips.get(f'{key}/transformers') if ratio else None
        rows.append([label, f"{ips[f'{key}/{who}']:.3f}", f'{theirs_ips:.3f}' if theirs_ips else '-',
                     f'{ratio:.3f}x' if ratio else '-', f"{peaks[f'{key}/{who}']:.1f}",
                     f"{peaks[f'{key}/transformers']:.1f}" if theirs_ips else '-'])
    print_table(['measurement', 'ours img/s', 'transformers img/s', 'ours/transformers', 'peak MiB ours',
                 'peak MiB transformers'], rows)
    print('peak MiB: what the call allocated above what was held before it (torch profiler memory events)')
    print(f'torch.mm at fc1 ({args.dtype}): {mm_gflops:.4g} GFLOP/s; our forward runs at {fwd_share:.1%} of it '
          f'(same rounds; {flop_img / 1e9:.4g} GFLOP per image)')
    print(f"frozen train step = {summary['frozen_step_cost']:.3f}x a forward (ours)")
    if args.compile:
        compile_s = summary['compile_seconds']
        print(f"compile=True / eager (ours), speed: forward {summary['compiled_over_eager_forward']:.3f}x, "
              f"full train step {summary['compiled_over_eager_train_full']:.3f}x; compile time (first call less a "
              f"timed one): forward {compile_s['forward/ours-compiled']:.1f} s, "
              f"train step {compile_s['train-full/ours-compiled']:.1f} s")
    path = write_record(dict(config=vars(args), params=params, max_abs_diff=diff, seconds=sec,
                             images_per_second=ips, peak_extra_mib=peaks, summary=summary, profile=ops), args.json,
                        name='backbone_speed')
    print(f'record: {path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
