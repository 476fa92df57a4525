"""How long tools/train.py takes to start training InternViT-6B, and its peak host memory, on a CPU.

    python benchmarks/train_start_6b.py [--workdir work_dirs/train_start_6b] [--threads 2] [--keep]

1. writes a random-weight InternViT-6B-448px checkpoint in OpenGVLab's Hugging Face layout (bf16, 10.3 GiB,
   ``load_6b.write_checkpoint_6b``) and a tiny synthetic ADE20K set (tools/generate_synthetic_ade20k.py);
2. runs tools/train.py in a fresh process on configs/segmentation/internvit_6b_448_linear_frozen_ade20k_504.py
   (its ``init_cfg`` pointing at that checkpoint), batch 1, one iteration, no validation, no checkpoint saved,
   ``--threads`` torch threads;
3. prints what that process measured: the time from its start to the end of the first iteration, the time
   the model took to build (the Runner's ``build_model``) split into the InternViT's load of the
   checkpoint and the rest, the time spent in the InternViT's random init (0 when it is built on the meta
   device and filled from the checkpoint), and the peak resident memory beside the checkpoint's size.

The figures before training built the backbone on the meta device (issue 19, the same config, file, batch and
threads on this machine) are printed beside them. ``--depth``/``--width`` make a smaller model for a quick
look (the figures then do not compare). The checkpoint is deleted at the end unless ``--keep``; ``--ckpt``
reuses one written before.
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import resource
import shutil
import subprocess
import sys
import time

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from common import ROOT, print_table, write_record  # noqa: E402

GiB = 1024 ** 3
CONFIG = 'configs/segmentation/internvit_6b_448_linear_frozen_ade20k_504.py'
# issue 19, section 3: the same config, checkpoint, batch 1 and two threads, training building the
# backbone on the CPU with its random init and loading the checkpoint over it in init_weights
BEFORE = dict(first_iter_s=4 * 60 + 21, build_s=3 * 60 + 31, load_s=51.0, peak_gb=14.1)


def child(out: str) -> None:
    """In the fresh process: times the build, the load, the random init and the first iteration of
    tools/train.py (wrapping those methods; nothing else changes), writes them to ``out`` at exit."""
    import atexit
    import runpy

    import psutil
    from mmengine.runner import IterBasedTrainLoop, Runner

    from internvit_dense.models.backbones.internvit import InternViT

    started = psutil.Process().create_time()  # the process's start, before the interpreter's imports
    spent = dict(build_model=0.0, load_pretrained=0.0, random_init=0.0, init_weights=0.0, iteration=0.0)
    calls = dict(random_init=0)
    first_iter = {}

    def timed(cls, name, key):
        original = getattr(cls, name)

        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                spent[key] += time.perf_counter() - t0
                calls[key] = calls.get(key, 0) + 1
        setattr(cls, name, wrapper)

    timed(Runner, 'build_model', 'build_model')
    timed(InternViT, 'load_pretrained', 'load_pretrained')
    timed(InternViT, '_random_init', 'random_init')
    # mmengine's init_weights of the whole model: it reads every parameter twice (its "initialisation
    # information" compares each one's mean before and after), the first read of the memory-mapped weights
    timed(Runner, '_init_model_weights', 'init_weights')
    run_iter = IterBasedTrainLoop.run_iter

    def first_iteration(self, data_batch):
        t0 = time.perf_counter()
        result = run_iter(self, data_batch)
        if 's' not in first_iter:
            spent['iteration'] = time.perf_counter() - t0
            first_iter['s'] = time.time() - started
        return result
    IterBasedTrainLoop.run_iter = first_iteration

    def record():
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        with open(out, 'w') as f:
            json.dump(dict(spent=spent, calls=calls, first_iter_s=first_iter.get('s'), peak_bytes=peak,
                           threads=__import__('torch').get_num_threads()), f)
    atexit.register(record)
    sys.argv = sys.argv[sys.argv.index('--') + 1:]
    runpy.run_path(sys.argv[0], run_name='__main__')


def write_config(path: str, ckpt: str, data_root: str, depth: int, width: int) -> None:
    arch = '' if depth == 45 and width == 3200 else (
        f"arch=dict(_delete_=True, embed_dims={width}, depth={depth}, num_heads={width // 128}, mlp_dims={4 * width}, "
        f"norm_type='rms_norm', qk_normalization=True, qkv_bias=False, patch_size=14, pretrain_size=448), "
        f"out_indices=[{depth - 1}], ")
    head = '' if width == 3200 else f', decode_head=dict(in_channels={width}, channels={width})'
    with open(path, 'w') as f:
        f.write(f"""_base_ = [{osp.join(ROOT, CONFIG)!r}]
model = dict(backbone=dict({arch}init_cfg=dict(checkpoint={ckpt!r})){head})
train_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root={data_root!r}))
val_dataloader = dict(dataset=dict(data_root={data_root!r}))
test_dataloader = val_dataloader
train_cfg = dict(max_iters=1, val_begin=2)  # one iteration, no validation
default_hooks = dict(checkpoint=dict(interval=10 ** 6, save_last=False), logger=dict(interval=1))
""")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--workdir', default=osp.join(ROOT, 'work_dirs', 'train_start_6b'))
    p.add_argument('--ckpt', help='a 6B-448 checkpoint written before (else one is written into --workdir)')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--depth', type=int, default=45)
    p.add_argument('--width', type=int, default=3200)
    p.add_argument('--keep', action='store_true', help='keep the checkpoint written')
    p.add_argument('--child', help=argparse.SUPPRESS)
    args, rest = p.parse_known_args(argv)
    if args.child:
        return child(args.child)

    from load_6b import write_checkpoint_6b
    os.makedirs(args.workdir, exist_ok=True)
    ckpt = args.ckpt or osp.join(args.workdir, 'internvit_6b_448')
    if not args.ckpt:
        print(f'writing a random {args.depth}-block InternViT-6B-448 checkpoint to {ckpt} ...', flush=True)
        t0 = time.perf_counter()
        write_checkpoint_6b(ckpt, args.depth, args.width, heads=args.width // 128)
        print(f'  written in {time.perf_counter() - t0:.0f} s', flush=True)
    size = sum(os.path.getsize(osp.join(ckpt, f)) for f in os.listdir(ckpt) if f.endswith('.safetensors'))
    data_root = osp.join(args.workdir, 'synthetic_ade20k')
    subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'generate_synthetic_ade20k.py'), '--root', data_root,
                    '--num-train', '2', '--num-val', '1', '--overwrite', '--quiet'], check=True, cwd=ROOT)
    config = osp.join(args.workdir, 'train_6b_one_iter.py')
    write_config(config, ckpt, data_root, args.depth, args.width)

    record = osp.join(args.workdir, 'child.json')
    if osp.exists(record):
        os.remove(record)
    cmd = [sys.executable, osp.abspath(__file__), '--child', record, '--', osp.join(ROOT, 'tools', 'train.py'),
           config, '--work-dir', osp.join(args.workdir, 'run')]
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    print(f'tools/train.py {CONFIG} (batch 1, one iteration, {args.threads} threads) in a fresh process ...',
          flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0 or not osp.exists(record):
        raise SystemExit(f'tools/train.py failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}')
    with open(record) as f:
        got = json.load(f)
    if got['first_iter_s'] is None:
        raise SystemExit(f'tools/train.py ran no iteration:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}')
    spent = got['spent']
    after = dict(first_iter_s=got['first_iter_s'], build_s=spent['build_model'] - spent['load_pretrained'],
                 load_s=spent['load_pretrained'], peak_gb=got['peak_bytes'] / 1e9)
    full = args.depth == 45 and args.width == 3200
    rows = [('time to the end of the first iteration (s)', BEFORE['first_iter_s'], after['first_iter_s']),
            ('model build without the checkpoint load (s)', BEFORE['build_s'], after['build_s']),
            ('checkpoint load into the backbone (s)', BEFORE['load_s'], after['load_s']),
            ('peak resident memory (GB)', BEFORE['peak_gb'], after['peak_gb'])]
    print_table(['', 'before (issue 19)' if full else 'before (6B, not comparable)', 'now', 'now / before'],
                [(name, f'{b:.1f}', f'{a:.1f}', f'{a / b:.2f}') for name, b, a in rows])
    after.update(init_weights_s=spent['init_weights'], iteration_s=spent['iteration'])
    print(f'of the {after["first_iter_s"]:.0f} s to the first iteration: the iteration itself {spent["iteration"]:.0f} s, '
          f"mmengine's init_weights of the model (reads every weight twice) {spent['init_weights']:.0f} s, "
          f'the model build {spent["build_model"]:.1f} s (the checkpoint load {spent["load_pretrained"]:.1f} s: '
          'memory-mapped, read on first use)')
    print(f'InternViT random init: {got["calls"].get("random_init", 0)} calls, {spent["random_init"]:.1f} s; '
          f'checkpoint {size / GiB:.1f} GiB ({size / 1e9:.1f} GB): peak / checkpoint = '
          f'{got["peak_bytes"] / size:.2f}; torch threads {got["threads"]}; process wall time {wall:.0f} s')
    path = write_record(dict(after=after, before=BEFORE if full else None, checkpoint_bytes=size,
                                        random_init_calls=got['calls'].get('random_init', 0),
                                        random_init_s=spent['random_init'], threads=got['threads'],
                                        depth=args.depth, width=args.width), name='train_start_6b')
    print(f'record: {path}')
    if not args.keep and not args.ckpt:
        shutil.rmtree(ckpt)
        print(f'deleted {ckpt}')


if __name__ == '__main__':
    main()
