"""InternViT-6B at its real size on a CPU: load time, peak host memory and a frozen bf16 forward,
ours against transformers' ``InternVLVisionModel`` on the same checkpoint.

    python benchmarks/load_6b.py [--workdir /tmp/internvit-6b-bench] [--keep]

1. writes a random-weight InternViT-6B-448px checkpoint in OpenGVLab's Hugging Face layout
   (bf16, sharded safetensors, the real shapes: 45 blocks, 3200 wide; 10.3 GiB), streamed shard by shard;
2. converts it with tools/convert_checkpoint.py to a transformers ``InternVLVisionModel`` directory;
3. in a fresh process each, ours (``InternViT.from_pretrained(dir, dtype=torch.bfloat16)``) and
   transformers (``InternVLVisionModel.from_pretrained(dir, dtype=torch.bfloat16)``): load time, peak
   resident memory, and a frozen bf16 forward of one 448x448 image and of a batch of 4 at 224 (each
   timed warm: the second call), images/s;
4. checks our bf16 features: finite, and the first and the last block equal to the same block computed
   in fp32 from the same (bf16) weights and inputs, to bf16 tolerance; and ours equal to transformers';
5. saves a training checkpoint (``iter_1.pth``: this backbone in bf16, a random linear head) of
   configs/segmentation/internvit_6b_448_linear_frozen_ade20k_504.py and runs tools/infer.py on it in a
   fresh process: its peak resident memory (``--skip-infer`` skips this).

The processes run one after the other; each needs about the checkpoint's size in memory (11-12 GiB).
``--depth``/``--width`` make a smaller model for a quick look. The checkpoint is deleted at the end
unless ``--keep``.
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
from common import ROOT, peak_rss_mib, print_table, rss_mib, write_record  # noqa: E402

GiB = 1024 ** 3
# bf16 keeps 8 significant bits: each rounding is off by at most 2^-9 (0.2%) relative. A block rounds its
# input, the attention and MLP outputs and the residual sums a handful of times (matmuls accumulate in fp32),
# so its output differs from fp32 by a few such steps: we allow 2^-5 (3.1%) relative (Frobenius norm).
BF16_BLOCK_TOL = 2 ** -5
# ours vs transformers after 45 bf16 blocks: both round differently at every step (fused vs split qkv,
# fp32 vs bf16 norm weights), so the difference grows with depth; the same relative measure, 2^-3.
CROSS_IMPL_TOL = 2 ** -3


def peak_rss_gib() -> float:
    return peak_rss_mib() / 1024


def rss_gib() -> float:
    return rss_mib() / 1024


def rel_err(a, b) -> float:
    a, b = a.float(), b.float()
    return float((a - b).norm() / b.norm())


# ------------------------------------------------------------------ 1. the checkpoint
def write_checkpoint_6b(path: str, depth: int, width: int, heads: int, seed: int = 0) -> int:
    """Random weights of the 448px InternViT-6B in OpenGVLab's HF layout, generated and written one shard at a time."""
    import torch

    from internvit_dense.checkpoint import FORMAT_OPENGVLAB_HF, write_checkpoint

    g = torch.Generator().manual_seed(seed)
    grid, patch, mlp = 448 // 14, 14, 4 * width

    def rand(*shape, std=0.02, mean=0.0):
        t = torch.empty(shape, dtype=torch.bfloat16)
        return t.normal_(mean, std, generator=g)

    def tensors():
        yield 'cls_token', rand(1, 1, width)
        yield 'pos_embed', rand(1, 1 + grid * grid, width)
        yield 'patch_embed.proj.weight', rand(width, 3, patch, patch)
        yield 'patch_embed.proj.bias', rand(width)
        for i in range(depth):
            b = f'blocks.{i}.'
            yield b + 'norm1.weight', rand(width, std=0.1, mean=1.0)
            yield b + 'attn.qkv.weight', rand(3 * width, width)
            yield b + 'attn.q_norm.weight', rand(width, std=0.1, mean=1.0)
            yield b + 'attn.k_norm.weight', rand(width, std=0.1, mean=1.0)
            yield b + 'attn.proj.weight', rand(width, width)
            yield b + 'attn.proj.bias', rand(width)
            yield b + 'ls1.gamma', rand(width, std=0.01, mean=0.1)
            yield b + 'norm2.weight', rand(width, std=0.1, mean=1.0)
            yield b + 'mlp.fc1.weight', rand(mlp, width)
            yield b + 'mlp.fc1.bias', rand(mlp)
            yield b + 'mlp.fc2.weight', rand(width, mlp)
            yield b + 'mlp.fc2.bias', rand(width)
            yield b + 'ls2.gamma', rand(width, std=0.01, mean=0.1)

    arch = dict(arch=dict(embed_dims=width, depth=depth, num_heads=heads, mlp_dims=mlp, norm_type='rms_norm',
                          layer_norm_eps=1e-6, qk_normalization=True, qkv_bias=False),
                patch_size=patch, pretrain_size=448, in_channels=3)
    write_checkpoint(tensors(), path, FORMAT_OPENGVLAB_HF, arch=arch, max_shard_bytes=2 * 10 ** 9)
    return sum(os.path.getsize(osp.join(path, f)) for f in os.listdir(path) if f.endswith('.safetensors'))


# ------------------------------------------------------------------ 3. one implementation, in a fresh process
def images(seed=0):
    import torch
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 3, 448, 448, generator=g), torch.randn(4, 3, 224, 224, generator=g)


def timed_forward(fn, x):
    fn(x)  # cold: first-touch of the weights, allocator warm-up
    t0 = time.perf_counter()
    out = fn(x)
    return out, time.perf_counter() - t0


def run_ours(ckpt: str, out: str) -> dict:
    import copy

    import torch
    import torch.nn.functional as F

    from internvit_dense.models.backbones import InternViT

    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = InternViT.from_pretrained(ckpt, dtype=torch.bfloat16, frozen=True, attn_impl='sdpa')
    load_s = time.perf_counter() - t0
    res = dict(load_s=load_s, rss_after_load_gib=rss_gib(), peak_after_load_gib=peak_rss_gib(),
               param_dtypes=sorted({str(p.dtype) for p in model.parameters()}))
    x448, x224 = images()

    captured = {}
    first, last = model.blocks[0], model.blocks[-1]
    hooks = [first.register_forward_hook(lambda m, a, o: captured.__setitem__('first_out', o)),
             last.register_forward_hook(lambda m, a, o: captured.update(last_in=a[0], last_out=o))]
    feats, res['fwd448_s'] = timed_forward(model.forward_features, x448)
    for h in hooks:
        h.remove()
    res['out_dtype'] = str(feats.dtype)
    res['finite'] = bool(torch.isfinite(feats).all())
    _, res['fwd224x4_s'] = timed_forward(model.forward_features, x224)
    res['peak_gib'] = peak_rss_gib()

    with torch.no_grad():  # fp32 reference of the first and last block, from the same weights and inputs
        pe = model.patch_embed.proj
        tokens = F.conv2d(x448, pe.weight.float(), pe.bias.float(), stride=model.patch_size).flatten(2).transpose(1, 2)
        tokens = torch.cat([model.cls_token.float(), tokens], dim=1) + model.pos_embed.float()
        grid = (448 // model.patch_size,) * 2
        ref_first = copy.deepcopy(first).float()(tokens, grid)
        ref_last = copy.deepcopy(last).float()(captured['last_in'].float(), grid)
    res['first_block_rel_err'] = rel_err(captured['first_out'], ref_first)
    res['last_block_rel_err'] = rel_err(captured['last_out'], ref_last)
    torch.save(feats.float(), out)
    return res


def run_transformers(ckpt: str, out: str) -> dict:
    import torch
    from transformers import InternVLVisionModel

    t0 = time.perf_counter()
    model = InternVLVisionModel.from_pretrained(ckpt, dtype=torch.bfloat16).eval()
    load_s = time.perf_counter() - t0
    res = dict(load_s=load_s, rss_after_load_gib=rss_gib(), peak_after_load_gib=peak_rss_gib(),
               param_dtypes=sorted({str(p.dtype) for p in model.parameters()}))
    x448, x224 = images()

    def forward(x):
        with torch.no_grad():
            return model(pixel_values=x.to(torch.bfloat16)).last_hidden_state

    feats, res['fwd448_s'] = timed_forward(forward, x448)
    res['out_dtype'] = str(feats.dtype)
    res['finite'] = bool(torch.isfinite(feats).all())
    _, res['fwd224x4_s'] = timed_forward(forward, x224)
    res['peak_gib'] = peak_rss_gib()
    torch.save(feats.float(), out)
    return res


def child(which: str, ckpt: str, workdir: str) -> dict:
    """Runs one implementation in a fresh Python process; returns what it measured."""
    result = osp.join(workdir, f'{which}.json')
    cmd = [sys.executable, osp.abspath(__file__), '--child', which, '--ckpt', ckpt, '--workdir', workdir]
    print(f'  {which}: fresh process ...', flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
    if proc.returncode != 0:
        raise SystemExit(f'{which} failed (exit {proc.returncode})')
    with open(result) as f:
        return json.load(f)


# ------------------------------------------------------------------ 5. tools/infer.py on a 6B training checkpoint
INFER_CONFIG = 'configs/segmentation/internvit_6b_448_linear_frozen_ade20k_504.py'


def write_training_checkpoint(backbone_dir: str, path: str) -> None:
    """An ``iter_N.pth`` as training saves it for INFER_CONFIG: the backbone's bf16 tensors from the
    checkpoint (what a frozen bf16 backbone holds), the head random. Only the head is ever built."""
    import torch
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope
    from timm.layers import resample_abs_pos_embed

    import internvit_dense.models  # noqa: F401  (registers the modules)
    from internvit_dense.checkpoint import open_checkpoint
    from internvit_dense.models.backbones.internvit import backbones_on_meta

    cfg = Config.fromfile(osp.join(ROOT, INFER_CONFIG))
    init_default_scope(cfg.default_scope)
    with backbones_on_meta():
        model = MODELS.build(cfg.model)
    state_dict = {k: v for k, v in model.state_dict().items() if not k.startswith('backbone.')}
    reader = open_checkpoint(backbone_dir)
    for name, value in reader.tensors():
        if name.startswith('blocks.') and int(name.split('.')[1]) >= model.backbone.depth:
            continue
        if name == 'pos_embed' and value.shape != model.backbone.pos_embed.shape:
            # training holds it at the config's grid (504 / 14 = 36 x 36), resized once when the backbone loaded
            value = resample_abs_pos_embed(value.float(), list(model.backbone.pretrain_grid), num_prefix_tokens=1,
                                           interpolation='bicubic', antialias=False).to(value.dtype)
        state_dict[f'backbone.{name}'] = value.to(torch.float32) if 'norm' in name else value
    torch.save(dict(state_dict=state_dict, meta=dict(iter=1)), path)


def run_infer(ckpt: str, workdir: str) -> dict:
    """tools/infer.py in a fresh process on one 512x683 image; its peak resident memory."""
    import numpy as np
    from PIL import Image
    image = osp.join(workdir, 'photo.jpg')
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (512, 683, 3), dtype=np.uint8)).save(image)
    peak_file = osp.join(workdir, 'infer_peak_kib')
    code = ('import atexit, resource, runpy, sys; '
            f'atexit.register(lambda: open({peak_file!r}, "w").write(str(resource.getrusage(resource.RUSAGE_SELF)'
            '.ru_maxrss))); sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name="__main__")')
    cmd = [sys.executable, '-c', code, osp.join(ROOT, 'tools', 'infer.py'), INFER_CONFIG, ckpt, image,
           '--out-dir', osp.join(workdir, 'infer_out'), '--device', 'cpu', '--quiet']
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f'tools/infer.py failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}')
    with open(peak_file) as f:
        peak = int(f.read()) * 1024 / GiB
    summary = [line.strip() for line in proc.stdout.splitlines() if line.strip().startswith(('done:', 'classes'))]
    return dict(seconds=seconds, peak_gib=peak, output=' | '.join(summary))


# ------------------------------------------------------------------ the table
def report(ours: dict, theirs: dict, weights_gib: float, cross_err: float, convert: dict) -> dict:
    """Prints the side-by-side table; returns the figures for the record."""
    speed448, speed224 = theirs['fwd448_s'] / ours['fwd448_s'], theirs['fwd224x4_s'] / ours['fwd224x4_s']
    rows = [
        ('load (s)', ours['load_s'], theirs['load_s'], theirs['load_s'] / ours['load_s'], 'theirs / ours'),
        ('RSS after load (GiB)', ours['rss_after_load_gib'], theirs['rss_after_load_gib'],
         ours['rss_after_load_gib'] / theirs['rss_after_load_gib'], 'ours / theirs'),
        ('peak RSS, load + forwards (GiB)', ours['peak_gib'], theirs['peak_gib'], ours['peak_gib'] / theirs['peak_gib'],
         'ours / theirs'),
        ('1x448 forward, warm (s)', ours['fwd448_s'], theirs['fwd448_s'], speed448, 'theirs / ours'),
        ('1x448 images/s', 1 / ours['fwd448_s'], 1 / theirs['fwd448_s'], speed448, 'ours / theirs'),
        ('4x224 forward, warm (s)', ours['fwd224x4_s'], theirs['fwd224x4_s'], speed224, 'theirs / ours'),
        ('4x224 images/s', 4 / ours['fwd224x4_s'], 4 / theirs['fwd224x4_s'], speed224, 'ours / theirs'),
    ]
    print(f'checkpoint: {weights_gib:.2f} GiB of bf16 weights (safetensors shards); torch threads {ours["threads"]} '
          f'of {os.cpu_count()} CPUs')
    print_table(['', 'ours', 'transformers', 'ratio', ''],
                [(name, f'{a:.3g}', f'{b:.3g}', f'{r:.2f}', note) for name, a, b, r, note in rows])
    print(f'peak RSS against the weights: ours {ours["peak_gib"]:.2f} GiB = {ours["peak_gib"] / weights_gib:.3f} x '
          f'weights (1.1 x weights + 1 GiB = {1.1 * weights_gib + 1:.2f} GiB); '
          f'transformers {theirs["peak_gib"]:.2f} GiB')
    print(f'weights held as: ours {ours["param_dtypes"]} (norm weights fp32), transformers {theirs["param_dtypes"]}; '
          f'features out: ours {ours["out_dtype"]}, transformers {theirs["out_dtype"]}')
    print(f'features finite: ours {ours["finite"]}, transformers {theirs["finite"]}')
    print(f'bf16 vs fp32 of the same block, same weights and input (relative Frobenius error; bf16 tolerance '
          f'{BF16_BLOCK_TOL:.4f}): first block {ours["first_block_rel_err"]:.4f}, '
          f'last block {ours["last_block_rel_err"]:.4f}')
    print(f'ours vs transformers, last block output (both bf16; tolerance {CROSS_IMPL_TOL:.3f}): {cross_err:.4f}')
    print(f'conversion to transformers (tools/convert_checkpoint.py, streamed): {convert["seconds"]:.1f}s, '
          f'peak RSS {convert["peak_gib"]:.2f} GiB')
    return dict(weights_gib=weights_gib, ours=ours, transformers=theirs, images_per_s_ratio_448=speed448,
                images_per_s_ratio_224x4=speed224, ours_vs_transformers_rel_err=cross_err, convert=convert,
                bf16_block_tol=BF16_BLOCK_TOL, cross_impl_tol=CROSS_IMPL_TOL)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--workdir', default='/tmp/internvit-6b-bench')
    p.add_argument('--keep', action='store_true', help='keep the checkpoints (10.3 GiB each)')
    p.add_argument('--depth', type=int, default=45)
    p.add_argument('--width', type=int, default=3200)
    p.add_argument('--heads', type=int, default=25)
    p.add_argument('--skip-infer', action='store_true', help='no tools/infer.py run on a 6B training checkpoint')
    p.add_argument('--child', choices=('ours', 'transformers', 'write-training-checkpoint'), help=argparse.SUPPRESS)
    p.add_argument('--ckpt', help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.child == 'write-training-checkpoint':
        write_training_checkpoint(args.ckpt, osp.join(args.workdir, 'iter_1.pth'))
        return
    if args.child:
        import torch
        run = run_ours if args.child == 'ours' else run_transformers
        res = run(args.ckpt, osp.join(args.workdir, f'{args.child}_features.pt'))
        res['threads'] = torch.get_num_threads()
        with open(osp.join(args.workdir, f'{args.child}.json'), 'w') as f:
            json.dump(res, f)
        return

    os.makedirs(args.workdir, exist_ok=True)
    ogv, hf = osp.join(args.workdir, 'opengvlab-hf'), osp.join(args.workdir, 'transformers')
    try:
        print(f'1/4 writing a random InternViT-6B-448px ({args.depth} blocks, {args.width} wide, bf16) to {ogv}',
              flush=True)
        t0 = time.perf_counter()
        nbytes = write_checkpoint_6b(ogv, args.depth, args.width, args.heads)
        print(f'    {nbytes / GiB:.2f} GiB in {time.perf_counter() - t0:.0f}s', flush=True)

        print('2/4 converting to a transformers InternVLVisionModel directory', flush=True)
        t0 = time.perf_counter()
        cmd = [sys.executable, osp.join(ROOT, 'tools', 'convert_checkpoint.py'), ogv, hf, '--to', 'transformers',
               '--shard-size', '2GB']
        proc = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f'conversion failed:\n{proc.stderr[-3000:]}')
        # the largest child waited for so far: the conversion is the first
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        convert = dict(seconds=time.perf_counter() - t0, peak_gib=peak_kib * 1024 / GiB)
        print(f'    {convert["seconds"]:.0f}s, peak RSS {convert["peak_gib"]:.2f} GiB', flush=True)

        print('3/4 loading and running each implementation in a fresh process', flush=True)
        ours = child('ours', ogv, args.workdir)
        theirs = child('transformers', hf, args.workdir)

        print('4/4 comparing features', flush=True)
        import torch
        a = torch.load(osp.join(args.workdir, 'ours_features.pt'))
        b = torch.load(osp.join(args.workdir, 'transformers_features.pt'))
        cross = rel_err(a, b)
        print()
        record = report(ours, theirs, nbytes / GiB, cross, convert)
        if not args.skip_infer:
            shutil.rmtree(hf, ignore_errors=True)  # disk: the training checkpoint takes its place
            print(f'\n5/5 tools/infer.py {INFER_CONFIG} on a training checkpoint of this backbone (head random)',
                  flush=True)
            subprocess.run([sys.executable, osp.abspath(__file__), '--child', 'write-training-checkpoint', '--ckpt',
                            ogv, '--workdir', args.workdir], cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
                           check=True)
            infer = run_infer(osp.join(args.workdir, 'iter_1.pth'), args.workdir)
            print(f'tools/infer.py, 1 image of 683x512 (slide windows of 504): {infer["seconds"]:.0f}s in all, '
                  f'peak RSS {infer["peak_gib"]:.2f} GiB for {nbytes / GiB:.2f} GiB of bf16 weights; {infer["output"]}')
            record['infer'] = infer
        print(f'record: {write_record(record, name="load_6b")}')
    finally:
        if not args.keep:
            for d in (ogv, hf):
                shutil.rmtree(d, ignore_errors=True)
            for f in ('iter_1.pth',):
                if osp.exists(osp.join(args.workdir, f)):
                    os.remove(osp.join(args.workdir, f))


if __name__ == '__main__':
    main()
