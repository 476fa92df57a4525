#!/usr/bin/env python
"""Checks a machine with one NVIDIA GPU: what works there and what it measures, as one table.

    python tools/gpu_check.py                                  # every row
    python tools/gpu_check.py --only mmcv attn --json gpu.json # rows by name or prefix; the table also as JSON
    python tools/gpu_check.py --skip 'train.*.zero1_bf16' 6b.compiled
    python tools/gpu_check.py --list                           # the rows, nothing run

Each row prints as soon as it is measured: name, status (ok / FAIL / skip), the measured figure, a note.
Rows (docs/gpu.md, "Checking a GPU machine", says what each one holds to):

- ``env``: torch, CUDA, the card and its compute capability.
- ``mmcv.*``: mmcv's compiled ops on CUDA in fp32 and with bf16 inputs (multi-scale deformable attention,
  RoIAlign, NMS) against implementations none of us wrote (mmcv's PyTorch path, torchvision's ops).
- ``attn.*``: eager, SDPA and flash-attn on two InternViT-6B-wide blocks in bf16, equal within a stated
  tolerance, and ``attn.dispatch``: the kernel ``attn_impl='auto'`` runs, with bf16 weights and under autocast.
- ``6b.*``: InternViT-6B with random weights built on the GPU in bf16: the memory plan of the frozen linear
  config's training step against that step's measured peak, ``torch.mm`` bf16 at the fc1 shape (the card's
  practical rate), and the forward and the full training step (forward + backward, no optimizer) at 504 px
  with each attention kernel and compiled, in TFLOP/s (torch's FlopCounterMode) and as a share of that rate.
- ``train.<config>.<mode>``: one training step of each tiny config through tools/train.py's ``main`` on a
  synthetic data set generated into the work dir, plain, ``--amp`` and DeepSpeed ZeRO-1 bf16: finite loss and
  the dtype the matmuls of each module ran in.

Exit status: 0 every row that ran holds (skipped rows aside); 1 a row failed; 3 no CUDA GPU (every row is
skipped; the CPU test suite runs the table this way); 2 bad arguments.
Everything it writes goes under --work-dir (default: a temporary folder, removed at the end).
"""

import argparse
import contextlib
import fnmatch
import gc
import importlib.util
import inspect
import json
import math
import os
import os.path as osp
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional
from unittest import mock

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)  # run from a checkout without install

import torch  # noqa: E402

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NO_GPU = 0, 1, 2, 3
OK, FAIL, SKIP = 'ok', 'FAIL', 'skip'

# Tolerances, stated once (docs/gpu.md quotes them)
MMCV_FP32_RTOL = 1e-4  # CUDA kernel vs reference, |a - b|max / |b|max, outputs and gradients
BF16_RTOL = 2e-2  # bf16 inputs vs the fp32 result (bf16 keeps 8 bits: 4e-3 per value, sums of a few dozen)
ATTN_BF16_RTOL = 2e-2  # two InternViT blocks in bf16, one attention kernel vs eager: |a - b|rms / |b|rms
PLAN_RANGE = (0.80, 1.10)  # measured peak / planned peak of the 6B frozen linear step

# The tiny configs of the training rows, by the name the issue uses for them.
TRAIN_CONFIGS = {
    'linear': 'configs/segmentation/tiny/tiny_linear_frozen_synthetic.py',
    'upernet': 'configs/segmentation/tiny/tiny_upernet_full_synthetic.py',
    'adapter_upernet': 'configs/segmentation/tiny/tiny_adapter_upernet_frozen_synthetic.py',
    'mask_rcnn': 'configs/detection/tiny/tiny_adapter_mask-rcnn_fpn_synthetic.py',
    'linear_probe': 'configs/classification/tiny/tiny_linear_probe_synthetic.py',
}
TRAIN_MODES = {'plain': [], 'amp': ['--amp'], 'zero1_bf16': ['--deepspeed', '1', '--deepspeed-precision', 'bf16']}
CONFIG_6B = 'configs/segmentation/internvit_6b_linear_frozen_ade20k_504.py'
ATTN_KERNELS = ('sdpa', 'eager', 'flash', 'compiled')


# ------------------------------------------------------------------ the table
@dataclass
class Result:
    name: str
    status: str
    figure: str = ''
    note: str = ''
    seconds: float = 0.0
    data: dict = field(default_factory=dict)


class Skip(Exception):
    """A row that cannot run here, with the reason."""


class Failed(Exception):
    """A row that ran and does not hold: the figure measured and why."""

    def __init__(self, note: str, figure: str = '', data: Optional[dict] = None):
        super().__init__(note)
        self.figure, self.data = figure, data or {}


@dataclass
class Row:
    name: str
    run: Callable[['Context'], Result]
    needs_gpu: bool = True  # False: also runs with --cpu (for developing this script; figures are not the GPU's)


def format_row(r: Result) -> str:
    return f'{r.name:32s} {r.status:5s} {r.figure:34s} {r.note}'


def header() -> str:
    return f'{"row":32s} {"status":5s} {"measured":34s} note\n' + '-' * 110


def exit_status(results: List[Result], gpu: bool) -> int:
    if not gpu:
        return EXIT_NO_GPU
    return EXIT_FAILED if any(r.status == FAIL for r in results) else EXIT_OK


def write_json(path: str, payload: dict) -> None:
    """Atomically (a killed run leaves the previous complete file, never half of one)."""
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    tmp = f'{path}.tmp{os.getpid()}'
    with open(tmp, 'w') as f:
        json.dump(payload, f, indent=1, default=str)
    os.replace(tmp, path)


def matches(name: str, patterns: List[str]) -> bool:
    """A row name against --only / --skip: exact, a dotted prefix (``mmcv``, ``6b.step``) or a glob."""
    return any(name == p or name.startswith(p.rstrip('.') + '.') or fnmatch.fnmatchcase(name, p) for p in patterns)


# ------------------------------------------------------------------ helpers
def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b| (in fp64)."""
    a, b = a.detach().double(), b.detach().double()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def rms_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return ((a - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt().clamp_min(1e-30)).item()


def synchronize(device: str) -> None:
    if device == 'cuda':
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: str, warmup: int = 1, iters: int = 3) -> float:
    """Seconds per call of ``fn``, the mean of ``iters`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / iters


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@contextlib.contextmanager
def output_to(path: str):
    """Everything written to stdout/stderr (Python's, C++'s, subprocesses') goes to ``path`` instead:
    the table stays readable; a failed row's note quotes the end of this log."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    streams = sys.stdout, sys.stderr
    with open(path, 'ab') as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        # Python's own streams onto those descriptors too (pytest, for one, swaps sys.stdout for its own file)
        sys.stdout, sys.stderr = sys.__stdout__ or sys.stdout, sys.__stderr__ or sys.stderr
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            sys.stdout, sys.stderr = streams
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def log_tail(path: str, lines: int = 3) -> str:
    try:
        with open(path, errors='replace') as f:
            tail = [ln.strip() for ln in f.read().splitlines() if ln.strip()][-lines:]
    except OSError:
        return ''
    return ' | '.join(tail)


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f'gpu_check_tool_{name}', osp.join(ROOT, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------ context shared by the rows
class Context:
    def __init__(self, args, device: str):
        self.args = args
        self.device = device
        self.work_dir = args.work_dir
        self._cache: Dict[str, object] = {}

    def cached(self, key: str, make: Callable[[], object]):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def drop(self, *keys: str) -> None:
        for k in keys:
            self._cache.pop(k, None)
        free_memory()

    @property
    def capability(self):
        return torch.cuda.get_device_capability() if self.device == 'cuda' else None


def flash_attn_installed() -> Optional[str]:
    """None if flash-attn imports, else why not."""
    try:
        import flash_attn  # noqa: F401
    except Exception as e:  # ImportError, or an ABI error of a wheel built for another torch
        return f'flash-attn not importable ({type(e).__name__}: {str(e)[:80]})'
    return None


def expected_auto_kernel(ctx: Context) -> str:
    """What 'auto' should pick on this device for bf16 q/k/v: flash-attn 2 where installed on sm80+, else SDPA."""
    if ctx.device == 'cuda' and flash_attn_installed() is None and ctx.capability >= (8, 0):
        return 'flash'
    return 'sdpa'


# ------------------------------------------------------------------ env
def row_env(ctx: Context) -> Result:
    if ctx.device != 'cuda':
        return Result('env', OK, f'CPU, torch {torch.__version__}', '--cpu: figures are this CPU\'s')
    props = torch.cuda.get_device_properties(0)
    cap = torch.cuda.get_device_capability(0)
    figure = f'{props.name}, sm{cap[0]}{cap[1]}'
    note = (f'torch {torch.__version__} (CUDA {torch.version.cuda}), {props.total_memory / 2**30:.0f} GiB, '
            f'bf16 {"yes" if torch.cuda.is_bf16_supported() else "no"}')
    return Result('env', OK, figure, note, data=dict(device=props.name, capability=list(cap),
                                                      memory=props.total_memory, torch=torch.__version__,
                                                      cuda=torch.version.cuda))


# ------------------------------------------------------------------ mmcv ops
def mmcv_cuda_ops() -> str:
    """mmcv's compiled ops with CUDA, or Skip/Failed saying what is missing."""
    try:
        import mmcv
        from mmcv.ops import get_compiling_cuda_version
    except Exception as e:
        raise Failed(f'mmcv.ops does not import ({type(e).__name__}: {str(e)[:100]}): mmcv built without ops?')
    version = get_compiling_cuda_version()
    if version in ('not available', ''):
        raise Failed(f'mmcv {mmcv.__version__} was built without CUDA ops: rebuild it on a machine with nvcc '
                     '(FORCE_CUDA=1, tools/setup_env.sh)')
    return f'mmcv {mmcv.__version__}, ops for CUDA {version}'


def row_mmcv_ops(ctx: Context) -> Result:
    return Result('mmcv.cuda_ops', OK, mmcv_cuda_ops())


def msda_inputs(device, dtype=torch.float32, seed=0):
    g = torch.Generator(device='cpu').manual_seed(seed)
    bs, heads, dims, points, queries = 2, 8, 32, 4, 300
    shapes = torch.tensor([[32, 32], [16, 16], [8, 8]], dtype=torch.long)
    starts = torch.cat([shapes.new_zeros(1), shapes.prod(1).cumsum(0)[:-1]])
    num_value = int(shapes.prod(1).sum())
    value = torch.randn(bs, num_value, heads, dims, generator=g)
    locations = torch.rand(bs, queries, heads, len(shapes), points, 2, generator=g)
    weights = torch.rand(bs, queries, heads, len(shapes), points, generator=g)
    weights = weights / weights.sum((-1, -2), keepdim=True)
    tensors = [t.to(device, dtype).requires_grad_() for t in (value, locations, weights)]
    return tensors, shapes.to(device), starts.to(device)


def msda_reference(value, shapes, locations, weights):
    from mmcv.ops.multi_scale_deform_attn import multi_scale_deformable_attn_pytorch
    return multi_scale_deformable_attn_pytorch(value, shapes, locations, weights)


def grads_of(out, inputs, seed=1):
    g = torch.Generator(device='cpu').manual_seed(seed)
    upstream = torch.randn(out.shape, generator=g).to(out.device, out.dtype)
    return torch.autograd.grad(out, inputs, upstream)


def mmcv_device(ctx: Context) -> str:
    """CUDA; with --cpu, mmcv's CPU kernels where it has them (developing this script)."""
    if ctx.device == 'cuda':
        mmcv_cuda_ops()
    return ctx.device


def row_msda(dtype_name: str):
    def run(ctx: Context) -> Result:
        device = mmcv_device(ctx)
        from mmcv.ops.multi_scale_deform_attn import MultiScaleDeformableAttnFunction
        (value, locations, weights), shapes, starts = msda_inputs(device)
        if dtype_name == 'bf16':  # the reference sees the bf16 values: the row measures the op, not the rounding
            value, locations, weights = (t.detach().bfloat16().float().requires_grad_()
                                         for t in (value, locations, weights))
        ref = msda_reference(value.double(), shapes, locations.double(), weights.double())
        ref_grads = grads_of(ref, [value, locations, weights])
        if dtype_name == 'fp32':
            if device != 'cuda':
                raise Skip('mmcv has no CPU kernel for it (its CPU path is the PyTorch reference)')
            out = MultiScaleDeformableAttnFunction.apply(value, shapes, starts, locations, weights, 64)
            what, tol = 'mmcv CUDA kernel, fp32', MMCV_FP32_RTOL
        else:
            from internvit_dense.models.fp32_ops import multi_scale_deformable_attn
            value, locations, weights = (t.detach().bfloat16().requires_grad_() for t in (value, locations, weights))
            out = multi_scale_deformable_attn(value, shapes, starts, locations, weights, im2col_step=64)
            if out.dtype != torch.bfloat16:
                raise Failed(f'bf16 inputs gave a {out.dtype} output; expected bf16 back')
            what, tol = 'bf16 inputs through internvit_dense.models.fp32_ops', BF16_RTOL
        grads = grads_of(out, [value, locations, weights])
        errs = dict(out=rel_err(out, ref), grad_value=rel_err(grads[0], ref_grads[0]),
                    grad_locations=rel_err(grads[1], ref_grads[1]), grad_weights=rel_err(grads[2], ref_grads[2]))
        worst = max(errs.values())
        figure = f'max rel err {worst:.1e} (tol {tol:.0e})'
        note = f'{what} vs mmcv\'s PyTorch path in fp64 on the same values: out and 3 gradients'
        if not worst <= tol:
            raise Failed(note + f': {errs}', figure, errs)
        return Result('', OK, figure, note, data=errs)
    return run


def roi_inputs(device, seed=0):
    g = torch.Generator(device='cpu').manual_seed(seed)
    feats = torch.randn(2, 16, 40, 48, generator=g)
    xy = torch.rand(64, 2, generator=g) * torch.tensor([300., 250.])
    wh = torch.rand(64, 2, generator=g) * 120 + 4
    rois = torch.cat([torch.randint(0, 2, (64, 1), generator=g).float(), xy, xy + wh], 1)
    return feats.to(device).requires_grad_(), rois.to(device)


def row_roi_align(dtype_name: str):
    def run(ctx: Context) -> Result:
        device = mmcv_device(ctx)
        import torchvision
        feats, rois = roi_inputs(device)
        if dtype_name == 'bf16':  # the reference sees the bf16 values
            feats, rois = feats.detach().bfloat16().float().requires_grad_(), rois.bfloat16().float()
        kw = dict(output_size=7, spatial_scale=1 / 8, sampling_ratio=2, aligned=True)
        ref = torchvision.ops.roi_align(feats.double(), rois.double(), **kw)
        ref_grad = grads_of(ref, [feats])[0]
        if dtype_name == 'fp32':
            from mmcv.ops import roi_align
            out = roi_align(feats, rois, kw['output_size'], kw['spatial_scale'], kw['sampling_ratio'], 'avg', True)
            what, tol = f'mmcv {device} kernel, fp32', MMCV_FP32_RTOL
            grad = grads_of(out, [feats])[0]
        else:
            from internvit_dense.models.fp32_ops import Fp32RoIAlign
            layer = Fp32RoIAlign(kw['output_size'], kw['spatial_scale'], kw['sampling_ratio'], aligned=True)
            bf = feats.detach().bfloat16().requires_grad_()
            out = layer(bf, rois.bfloat16())
            if out.dtype != torch.bfloat16:
                raise Failed(f'bf16 inputs gave a {out.dtype} output; expected bf16 back')
            what, tol = 'bf16 inputs through Fp32RoIAlign', BF16_RTOL
            grad = grads_of(out, [bf])[0]
        errs = dict(out=rel_err(out, ref), grad=rel_err(grad, ref_grad))
        worst = max(errs.values())
        figure = f'max rel err {worst:.1e} (tol {tol:.0e})'
        note = f'{what} vs torchvision.ops.roi_align in fp64 on the same values (aligned, 2x2 samples)'
        if not worst <= tol:
            raise Failed(note + f': {errs}', figure, errs)
        return Result('', OK, figure, note, data=errs)
    return run


def row_nms(dtype_name: str):
    def run(ctx: Context) -> Result:
        device = mmcv_device(ctx)
        import torchvision
        from mmcv.ops import nms
        g = torch.Generator(device='cpu').manual_seed(0)
        # integer corners up to 254 and distinct scores that are bf16 numbers: exact in bf16, so both rows and
        # torchvision see the same boxes and the same order
        xy = torch.randint(0, 200, (500, 2), generator=g).float()
        wh = torch.randint(8, 56, (500, 2), generator=g).float()
        boxes = torch.cat([xy, xy + wh], 1).to(device)
        distinct = torch.rand(4000, generator=g).bfloat16().unique().float()
        scores = distinct[torch.randperm(len(distinct), generator=g)[:500]].to(device)
        iou = 0.537  # a threshold that integer boxes' IoUs are unlikely to hit exactly ('>' vs '>=')
        expected = torchvision.ops.nms(boxes, scores, iou)
        if dtype_name == 'fp32':
            _, keep = nms(boxes, scores, iou)
            note = f'mmcv.ops.nms on {device}, fp32 boxes, IoU {iou}'
        else:  # mmcv's kernel reads boxes as float: the detector configs' fp32_nms
            from internvit_dense.models.fp32_ops import fp32_nms
            _, keep = fp32_nms(boxes.bfloat16(), scores.bfloat16(), iou)
            note = f'bf16 boxes through fp32_nms (the detector configs\' nms), IoU {iou}'
        same = keep.long().cpu().tolist() == expected.cpu().tolist()
        figure = f'{len(keep)} of 500 kept, {"same" if same else "NOT the same"} as torchvision'
        if not same:
            raise Failed(note, figure)
        return Result('', OK, figure, note)
    return run


# ------------------------------------------------------------------ attention
def vit_6b(ctx: Context, depth: int, dtype=torch.bfloat16, **kwargs):
    from internvit_dense.models.backbones.internvit import ARCH_PRESETS, InternViT
    arch = dict(ARCH_PRESETS['6b'], depth=depth)
    with torch.device(ctx.device):
        return InternViT(arch=arch, img_size=ctx.args.size, dtype=dtype, **kwargs)


def set_attn(vit, impl: str) -> None:
    for blk in vit.blocks:
        blk.attn.attn_impl = impl


def attn_slice(ctx: Context):
    """Two InternViT-6B-wide blocks in bf16 and the tokens of a batch at --size."""
    def make():
        torch.manual_seed(0)
        vit = vit_6b(ctx, depth=2, frozen=True)
        grid = (ctx.args.size // 14,) * 2
        x = torch.randn(2, 1 + grid[0] * grid[1], 3200, device=ctx.device, dtype=torch.bfloat16)
        set_attn(vit, 'eager')
        reference = vit.run_blocks(x, grid)
        return dict(vit=vit, x=x, grid=grid, reference=reference)
    return ctx.cached('attn_slice', make)


def row_attn(impl: str):
    def run(ctx: Context) -> Result:
        if impl == 'flash':
            if ctx.device != 'cuda':
                raise Skip('flash-attn needs CUDA')
            why = flash_attn_installed()
            if why:
                raise Skip(why)
        s = attn_slice(ctx)
        vit, x, grid = s['vit'], s['x'], s['grid']
        set_attn(vit, impl)
        out = vit.run_blocks(x, grid)
        seconds = timed(lambda: vit.run_blocks(x, grid), ctx.device, warmup=1, iters=3)
        if impl == 'eager':
            finite = bool(torch.isfinite(out).all())
            figure = f'{seconds * 1e3:.1f} ms / 2 blocks'
            if not finite:
                raise Failed('non-finite output', figure)
            return Result('', OK, figure, f'reference: 2 blocks at 6B width, batch 2 x {x.shape[1]} tokens, bf16')
        err = rms_err(out, s['reference'])
        figure = f'rms rel diff {err:.1e} vs eager, {seconds * 1e3:.1f} ms'
        note = f'tol {ATTN_BF16_RTOL:.0e}'
        if not err <= ATTN_BF16_RTOL:
            raise Failed(note, figure, dict(rms_rel_diff=err))
        return Result('', OK, figure, note, data=dict(rms_rel_diff=err, seconds=seconds))
    return run


def kernels_run(module, x) -> List[str]:
    """Which attention kernels ``module(x)`` calls: flash_attn_func, SDPA or neither (eager)."""
    from internvit_dense.models.backbones import internvit
    called = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy_sdpa(*a, **k):
        called.append('sdpa')
        return sdpa(*a, **k)

    patches = [mock.patch.object(torch.nn.functional, 'scaled_dot_product_attention', spy_sdpa)]
    if internvit.flash_attn_func is not None:
        flash = internvit.flash_attn_func

        def spy_flash(*a, **k):
            called.append('flash')
            return flash(*a, **k)
        patches.append(mock.patch.object(internvit, 'flash_attn_func', spy_flash))
    with contextlib.ExitStack() as stack:
        for p in patches:
            stack.enter_context(p)
        module(x)
    return called or ['eager']


def row_dispatch(ctx: Context) -> Result:
    from internvit_dense.models.backbones.internvit import ARCH_PRESETS, InternViT
    expected = expected_auto_kernel(ctx)
    seen = {}
    with torch.device(ctx.device):
        for case, dtype in (('bf16 weights', torch.bfloat16), ('fp32 weights + autocast bf16', torch.float32)):
            vit = InternViT(arch=dict(ARCH_PRESETS['tiny'], num_heads=2), img_size=56, pretrain_size=56,
                            patch_size=14, dtype=dtype, frozen=True)
            x = torch.randn(2, 17, 96, device=ctx.device, dtype=dtype)
            amp = (torch.autocast(ctx.device, dtype=torch.bfloat16) if dtype == torch.float32
                   else contextlib.nullcontext())
            with amp, torch.no_grad():
                seen[case] = kernels_run(vit.blocks[0].attn, x)[0]
    figure = ', '.join(f'{k}: {v}' for k, v in seen.items())
    if expected == 'flash':
        why = 'flash-attn installed, sm80+'
    elif ctx.device != 'cuda':
        why = 'no CUDA'
    else:
        why = flash_attn_installed() or f'sm{ctx.capability[0]}{ctx.capability[1]} < sm80'
    note = f"attn_impl='auto' expected {expected} ({why})"
    if any(v != expected for v in seen.values()):
        raise Failed(note, figure, seen)
    return Result('', OK, figure, note, data=seen)


# ------------------------------------------------------------------ InternViT-6B
def mm_rate(ctx: Context) -> dict:
    """torch.mm in bf16 at the fc1 shape of a batch at --size: the card's practical matmul rate."""
    def make():
        tokens = ctx.args.batch * (1 + (ctx.args.size // 14) ** 2)
        a = torch.randn(tokens, 3200, device=ctx.device, dtype=torch.bfloat16)
        b = torch.randn(3200, 12800, device=ctx.device, dtype=torch.bfloat16)
        iters = 20 if ctx.device == 'cuda' else 2
        seconds = timed(lambda: torch.mm(a, b), ctx.device, warmup=3 if ctx.device == 'cuda' else 1, iters=iters)
        flops = 2 * tokens * 3200 * 12800
        return dict(shape=[tokens, 3200, 12800], seconds=seconds, tflops=flops / seconds / 1e12)
    return ctx.cached('mm', make)


def row_mm(ctx: Context) -> Result:
    r = mm_rate(ctx)
    m, k, n = r['shape']
    return Result('', OK, f'{r["tflops"]:.4g} TFLOP/s', f'torch.mm bf16 ({m} x {k}) @ ({k} x {n})', data=r)


def config_6b(ctx: Context):
    from mmengine.config import Config

    from internvit_dense.models.backbones.internvit import ARCH_PRESETS
    cfg = Config.fromfile(osp.join(ROOT, CONFIG_6B))
    cfg.model.backbone.init_cfg = None  # random weights, built on the device
    if ctx.args.depth:
        cfg.model.backbone.arch = dict(ARCH_PRESETS['6b'], depth=ctx.args.depth)
        cfg.model.backbone.out_indices = [-1]
    cfg.train_dataloader.batch_size = ctx.args.batch
    return cfg


def seg_loss_step(model, wrapper, batch: int, size, device: str) -> float:
    """One training step of a segmentor as the runner runs it: forward with labels under the optim
    wrapper's context (autocast for an AmpOptimWrapper), parse, backward, optimizer step."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    h, w = size
    images = torch.randn(batch, 3, h, w, device=device)
    samples = []
    for _ in range(batch):
        s = SegDataSample(gt_sem_seg=PixelData(data=torch.randint(0, 150, (1, h, w), device=device)))
        s.set_metainfo(dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w)))
        samples.append(s)
    with wrapper.optim_context(model):
        loss = model.parse_losses(model(images, samples, mode='loss'))[0]
    wrapper.update_params(loss)
    return loss.item()


def model_6b(ctx: Context):
    """The 6B frozen linear config's segmentor, random weights built on the device."""
    def make():
        from internvit_dense.memory_plan.plan import build_model
        ctx.drop('attn_slice')
        cfg = config_6b(ctx)
        if ctx.device == 'cuda':
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        start = time.perf_counter()
        with torch.device(ctx.device):
            torch.manual_seed(0)
            model = build_model(cfg)
        synchronize(ctx.device)
        return dict(cfg=cfg, model=model, build_seconds=time.perf_counter() - start,
                    base=base if ctx.device == 'cuda' else 0)
    return ctx.cached('model_6b', make)


def row_plan_step(ctx: Context) -> Result:
    """The memory plan of the 6B frozen linear config against the peak of that step on this card (the config's
    batch of --batch images at its training crop, 504 px)."""
    from mmengine.optim import build_optim_wrapper

    from internvit_dense.memory_plan import plan_config, training_input_size
    m = model_6b(ctx)
    model, cfg = m['model'], m['cfg']
    size = training_input_size(cfg)
    model.train()
    wrapper = build_optim_wrapper(model, {k: v for k, v in cfg.optim_wrapper.items()
                                          if k in ('type', 'optimizer', 'constructor', 'paramwise_cfg')})
    loss = seg_loss_step(model, wrapper, ctx.args.batch, size, ctx.device)
    synchronize(ctx.device)
    measured = torch.cuda.max_memory_allocated() - m['base'] if ctx.device == 'cuda' else None
    del wrapper
    model.eval()
    free_memory()
    start = time.perf_counter()
    gib = torch.cuda.get_device_properties(0).total_memory / 2**30 if ctx.device == 'cuda' else 80
    plan = plan_config(config_6b(ctx), gpus=1, gpu_memory_gb=gib, batch_size=ctx.args.batch, suggest=False,
                       name=CONFIG_6B)
    plan_seconds = time.perf_counter() - start
    if measured is None:
        raise Skip(f'planned {plan.total / 2**30:.2f} GiB (loss {loss:.3f}); no CUDA memory statistics to compare')
    ratio = measured / plan.total
    figure = f'{measured / 2**30:.2f} GiB measured / {plan.total / 2**30:.2f} planned = {ratio:.2f}'
    note = (f'frozen linear step, batch {ctx.args.batch} x {size[0]}x{size[1]}, depth {config_depth(cfg)}: holds '
            f'within {PLAN_RANGE[0]:.2f}-{PLAN_RANGE[1]:.2f}; built on the GPU in {m["build_seconds"]:.1f} s, '
            f'planned in {plan_seconds:.1f} s')
    data = dict(measured=measured, planned=plan.total, ratio=ratio, plan=plan.to_dict(),
                build_seconds=m['build_seconds'])
    if not math.isfinite(loss):
        raise Failed('non-finite loss; ' + note, figure, data)
    if not PLAN_RANGE[0] <= ratio <= PLAN_RANGE[1]:
        raise Failed(note, figure, data)
    return Result('', OK, figure, note, data=data)


def config_depth(cfg) -> int:
    arch = cfg.model.backbone.arch
    from internvit_dense.models.backbones.internvit import resolve_arch
    return resolve_arch(arch)['depth']


def flops_6b(ctx: Context, backward: bool) -> int:
    """FLOPs of the 6B config's backbone forward (and backward) on a batch at --size, counted by torch's
    FlopCounterMode on the meta device (shapes only: no memory, no time) with eager attention, whose plain
    matmuls the counter sees whatever kernel the timed run uses."""
    def count():
        from torch.utils.flop_counter import FlopCounterMode

        from internvit_dense.models.backbones.internvit import InternViT
        kwargs = {k: v for k, v in config_6b(ctx).model.backbone.items() if k not in ('type', 'init_cfg')}
        kwargs.update(frozen=not backward, attn_impl='eager', device='meta', out_indices=[-1])
        vit = InternViT(**kwargs)
        images = torch.empty(ctx.args.batch, 3, ctx.args.size, ctx.args.size, device='meta')
        with FlopCounterMode(display=False) as counter:
            out = vit(images)
            if backward:
                sum(o.float().mean() for o in out).backward()
        return counter.get_total_flops()
    return ctx.cached(f'flops_{"step" if backward else "forward"}', count)


def backbone_6b(ctx: Context, kernel: str):
    """(backbone, images): the 6B config's backbone (or, for 'compiled', one built with compile=True)."""
    images = ctx.cached('images_6b', lambda: torch.randn(ctx.args.batch, 3, ctx.args.size, ctx.args.size,
                                                         device=ctx.device))
    if kernel != 'compiled':
        vit = model_6b(ctx)['model'].backbone
        set_attn(vit, 'flash' if kernel == 'flash' else kernel)
        vit.out_indices = [vit.depth - 1]  # every block (the config's head reads block 45 of 48)
        return vit, images

    def make():
        from internvit_dense.models.backbones.internvit import InternViT
        if 'compile' not in inspect.signature(InternViT.__init__).parameters:
            raise Skip('InternViT takes no compile= argument in this checkout (issue 21)')
        ctx.drop('model_6b')  # room for the compiled copy
        kwargs = {k: v for k, v in config_6b(ctx).model.backbone.items() if k not in ('type', 'init_cfg')}
        kwargs['out_indices'] = [-1]
        with torch.device(ctx.device):
            torch.manual_seed(0)
            return InternViT(**kwargs, compile=True)
    return ctx.cached('compiled_6b', make), images


def kernel_available(ctx: Context, kernel: str) -> None:
    if kernel == 'flash':
        if ctx.device != 'cuda':
            raise Skip('flash-attn needs CUDA')
        why = flash_attn_installed()
        if why:
            raise Skip(why)
        if ctx.capability < (8, 0):
            raise Skip('flash-attn 2 needs sm80+')


def rate_note(ctx: Context, flops: int, seconds: float, what: str) -> Result:
    mm = mm_rate(ctx)
    tflops = flops / seconds / 1e12
    figure = f'{tflops:.4g} TFLOP/s = {tflops / mm["tflops"]:.0%} of mm'
    note = (f'{what}: {ctx.args.batch / seconds:.2f} img/s, {seconds * 1e3:.0f} ms per batch of {ctx.args.batch}, '
            f'{flops / ctx.args.batch / 1e12:.3g} TFLOP per image; torch.mm {mm["tflops"]:.4g} TFLOP/s')
    return Result('', OK, figure, note, data=dict(tflops=tflops, seconds=seconds, flops=flops,
                                                   images_per_second=ctx.args.batch / seconds,
                                                   share_of_mm=tflops / mm['tflops']))


def row_6b_forward(kernel: str):
    def run(ctx: Context) -> Result:
        kernel_available(ctx, kernel)
        vit, images = backbone_6b(ctx, kernel)
        vit.frozen = True
        vit.requires_grad_(False)
        vit.eval()
        first = time.perf_counter()
        out = vit(images)
        synchronize(ctx.device)
        first = time.perf_counter() - first
        if not all(torch.isfinite(o).all() for o in out):
            raise Failed('non-finite features')
        del out
        return timed_6b_row(ctx, kernel, lambda: vit(images), first, backward=False, what='frozen forward')
    return run


def timed_6b_row(ctx: Context, kernel: str, call, first: float, backward: bool, what: str) -> Result:
    """The 6B rows' measurement after their first (checked, for compiled: compiling) call: the timed calls, the
    rate against torch.mm, the peak memory on a GPU and the first call's time for the compiled kernel."""
    if ctx.device == 'cuda':
        torch.cuda.reset_peak_memory_stats()
    seconds = timed(call, ctx.device, warmup=1 if kernel == 'compiled' else 0, iters=3 if ctx.device == 'cuda' else 1)
    r = rate_note(ctx, flops_6b(ctx, backward=backward), seconds, f'{what}, {kernel}')
    if ctx.device == 'cuda':
        r.note += f', peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB'
        r.data['peak_bytes'] = torch.cuda.max_memory_allocated()
    if kernel == 'compiled':
        r.note += f', first call (compiling) {first:.0f} s'
        r.data['first_call_seconds'] = first
    return r


def row_6b_step(kernel: str):
    def run(ctx: Context) -> Result:
        kernel_available(ctx, kernel)
        vit, images = backbone_6b(ctx, kernel)
        vit.frozen = False
        vit.requires_grad_(True)
        vit.train()

        def step():
            loss = sum(o.float().mean() for o in vit(images))
            loss.backward()
            for p in vit.parameters():
                p.grad = None
            return loss
        try:
            first = time.perf_counter()
            loss = step()
            synchronize(ctx.device)
            first = time.perf_counter() - first
            if not math.isfinite(loss.item()):
                raise Failed('non-finite loss')
            return timed_6b_row(ctx, kernel, step, first, backward=True, what='forward + backward, no optimizer')
        finally:
            vit.requires_grad_(False)
            vit.frozen = True
            vit.eval()
            free_memory()
    return run


# ------------------------------------------------------------------ training steps through tools/train.py
def synthetic_data(ctx: Context, kind: str) -> str:
    """The smallest synthetic set that a training step (and the runner's validation set-up) reads."""
    def make():
        root = osp.join(ctx.work_dir, 'data', kind)
        if osp.exists(osp.join(root, '.complete')):  # made by this run's parent process
            return root
        with output_to(osp.join(ctx.work_dir, 'data.log')):
            if kind == 'ade20k':
                from internvit_dense.datasets.synthetic_ade20k import generate_synthetic_ade20k
                generate_synthetic_ade20k(root, num_train=4, num_val=2, seed=0, progress=False, overwrite=True)
            elif kind == 'coco':
                from internvit_dense.datasets.synthetic_coco import generate_synthetic_coco
                generate_synthetic_coco(root, num_train=4, num_val=2, seed=0, progress=False, overwrite=True)
            else:
                from internvit_dense.datasets.synthetic_imagenet import generate_synthetic_imagenet
                generate_synthetic_imagenet(root, num_classes=2, train_per_class=2, val_per_class=1,
                                            variant_per_class=1, size=(56, 64), seed=0, progress=False,
                                            overwrite=True)
        return root
    return ctx.cached(f'data_{kind}', make)


def train_options(ctx: Context, name: str, row: str) -> List[str]:
    """--cfg-options for one iteration on the synthetic set, no validation, no data workers."""
    kind = {'mask_rcnn': 'coco', 'linear_probe': 'imagenet'}.get(name, 'ade20k')
    root = synthetic_data(ctx, kind)
    opts = [f'{split}_dataloader.{key}' for split in ('train', 'val', 'test')
            for key in ('num_workers=0', 'persistent_workers=False', f'dataset.data_root={root}')]
    opts += [f'experiment_name=gpu_check_{row}', 'default_hooks.logger.interval=1']
    if kind == 'imagenet':  # epoch-based: one epoch of one batch, validation from epoch 2
        opts += ['train_dataloader.batch_size=4', 'train_cfg.max_epochs=1', 'train_cfg.val_begin=2',
                 'auto_scale_lr.enable=False']
    else:
        opts += ['train_dataloader.batch_size=2', 'train_cfg.max_iters=1', 'train_cfg.val_begin=1000']
    if kind == 'coco':
        ann = osp.join(root, 'annotations', 'instances_val2017.json')
        opts += [f'val_evaluator.ann_file={ann}', f'test_evaluator.ann_file={ann}']
    return opts


def unwrap(model):
    """The mmengine BaseModel inside DDP / DeepSpeed wrappers."""
    from mmengine.model import BaseModel
    seen = 0
    while not isinstance(model, BaseModel) and seen < 5:
        inner = getattr(model, 'module', None)
        model = inner if inner is not None else getattr(model, 'model')
        seen += 1
    return model


def precision_probe():
    """A runner hook: the dtypes the matmuls (Linear, Conv) of each top-level module output in the first
    iteration, and the loss of every iteration."""
    from mmengine.hooks import Hook

    class PrecisionProbe(Hook):
        priority = 'LOWEST'

        def __init__(self):
            self.dtypes: Dict[str, set] = {}
            self.autocast: set = set()  # modules whose matmuls ran in another dtype than their weights'
            self.losses: List[float] = []
            self.handles = []

        def before_train_iter(self, runner, batch_idx, data_batch=None):
            if self.handles or self.dtypes:
                return
            for top_name, top in unwrap(runner.model).named_children():
                if top_name == 'data_preprocessor':
                    continue
                for m in top.modules():
                    if isinstance(m, (torch.nn.Linear, torch.nn.modules.conv._ConvNd)):
                        self.handles.append(m.register_forward_hook(
                            lambda mod, args, out, top_name=top_name: self.record(top_name, mod, out)))

        def record(self, top_name, module, out):
            out = out[0] if isinstance(out, (tuple, list)) else out
            if torch.is_tensor(out):
                self.dtypes.setdefault(top_name, set()).add(str(out.dtype).replace('torch.', ''))
                if out.dtype != module.weight.dtype:
                    self.autocast.add(top_name)

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            for h in self.handles:
                h.remove()
            self.handles = []
            loss = (outputs or {}).get('loss')
            if loss is not None:
                self.losses.append(float(loss.detach() if torch.is_tensor(loss) else loss))

    return PrecisionProbe()


def row_train(name: str, mode: str):
    def run(ctx: Context) -> Result:
        if mode == 'zero1_bf16':
            return train_in_subprocess(ctx, name, mode)
        return train_in_process(ctx, name, mode)
    return run


def train_in_subprocess(ctx: Context, name: str, mode: str) -> Result:
    """A DeepSpeed row in a process of its own, as DeepSpeed runs: it keeps the first process group it
    was given in module state, and a second training in one process fails on the destroyed one."""
    try:
        import deepspeed  # noqa: F401
    except Exception as e:
        raise Skip(f'DeepSpeed not importable ({type(e).__name__}: {str(e)[:80]})')
    out = osp.join(ctx.work_dir, f'train.{name}.{mode}.json')
    for kind in ('ade20k', 'coco', 'imagenet'):  # made once, here, for every child
        if kind == {'mask_rcnn': 'coco', 'linear_probe': 'imagenet'}.get(name, 'ade20k'):
            synthetic_data(ctx, kind)
    cmd = [sys.executable, osp.abspath(__file__), '--train-row', name, mode, '--work-dir', ctx.work_dir,
           '--json', out] + (['--cpu'] if ctx.device == 'cpu' else [])
    import subprocess
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if not osp.exists(out):
        tail = ' | '.join(ln for ln in proc.stdout.strip().splitlines()[-2:])
        raise Failed(f'the training process ended ({proc.returncode}) without a result: {tail[-200:]}')
    with open(out) as f:
        row = json.load(f)['rows'][0]
    if row['status'] == FAIL:
        raise Failed(row['note'], row['figure'], row['data'])
    if row['status'] == SKIP:
        raise Skip(row['note'])
    return Result('', row['status'], row['figure'], row['note'] + ' (own process)', data=row['data'])


def train_in_process(ctx: Context, name: str, mode: str) -> Result:
    """One iteration of a tiny config through tools/train.py's main, in this process, with a hook that
    records the dtype each module's matmuls ran in and the loss."""
    from mmengine.runner import FlexibleRunner, Runner
    row = f'train.{name}.{mode}'
    work = osp.join(ctx.work_dir, row)
    argv = [osp.join(ROOT, TRAIN_CONFIGS[name]), '--work-dir', work, '--no-memory-plan', *TRAIN_MODES[mode],
            '--cfg-options', *train_options(ctx, name, row)]
    probe = precision_probe()
    originals = {cls: cls.train for cls in (Runner, FlexibleRunner)}

    def with_probe(cls):
        def train(self):
            self.register_hook(probe)
            return originals[cls](self)
        return train

    patches = [mock.patch.object(Runner, 'train', with_probe(Runner)),
               mock.patch.object(FlexibleRunner, 'train', with_probe(FlexibleRunner))]
    os.makedirs(work, exist_ok=True)
    log = osp.join(work, 'gpu_check.log')
    try:
        with output_to(log), contextlib.ExitStack() as stack:
            for p in patches:
                stack.enter_context(p)
            ctx.cached('train_tool', lambda: load_tool('train')).main(argv)
    except SystemExit as e:
        raise Failed(f'tools/train.py stopped: {e.code if e.code not in (None, 0) else ""} {log_tail(log, 2)}')
    except Exception as e:
        with open(log, 'a') as f:
            traceback.print_exc(file=f)
        raise Failed(f'{type(e).__name__}: {str(e).splitlines()[0][:150] if str(e) else ""} (log: {log})')
    finally:
        free_memory()
    if not probe.losses:
        raise Failed(f'no loss logged (log: {log})')
    loss = probe.losses[-1]
    precision = ', '.join(f'{k} {"/".join(sorted(v))}' for k, v in probe.dtypes.items())
    figure = f'loss {loss:.4f}'
    data = dict(loss=loss, dtypes={k: sorted(v) for k, v in probe.dtypes.items()})
    if not math.isfinite(loss):
        raise Failed(f'non-finite loss; matmuls ran in: {precision}', figure, data)
    backbone = probe.dtypes.get('backbone', set())
    if mode == 'plain' and probe.autocast:  # no autocast: each matmul in its own weights' dtype
        raise Failed(f'without --amp, {sorted(probe.autocast)} computed in another dtype than their weights; '
                     f'matmuls: {precision}', figure, data)
    if mode != 'plain' and backbone != {'bfloat16'}:
        raise Failed(f'backbone matmuls ran in {"/".join(sorted(backbone))}, expected bfloat16; all: {precision}',
                     figure, data)
    return Result('', OK, figure, f'matmuls: {precision}', data=data)


# ------------------------------------------------------------------ the rows
def all_rows() -> List[Row]:
    rows = [Row('env', row_env, needs_gpu=False)]
    rows += [Row(f'attn.{k}', row_attn(k), needs_gpu=False) for k in ('eager', 'sdpa', 'flash')]
    rows += [Row('attn.dispatch', row_dispatch, needs_gpu=False)]
    rows += [Row('6b.mm', row_mm, needs_gpu=False), Row('6b.plan_step', row_plan_step, needs_gpu=False)]
    # the compiled rows last: their model replaces the eager one
    for kernels in (ATTN_KERNELS[:-1], ATTN_KERNELS[-1:]):
        rows += [Row(f'6b.forward.{k}', row_6b_forward(k), needs_gpu=False) for k in kernels]
        rows += [Row(f'6b.step.{k}', row_6b_step(k), needs_gpu=False) for k in kernels]
    rows += [Row('mmcv.cuda_ops', row_mmcv_ops)]
    for dtype in ('fp32', 'bf16'):
        rows += [Row(f'mmcv.msda.{dtype}', row_msda(dtype), needs_gpu=False),
                 Row(f'mmcv.roi_align.{dtype}', row_roi_align(dtype), needs_gpu=False),
                 Row(f'mmcv.nms.{dtype}', row_nms(dtype), needs_gpu=False)]
    rows += [Row(f'train.{name}.{mode}', row_train(name, mode), needs_gpu=False)
             for name in TRAIN_CONFIGS for mode in TRAIN_MODES]
    return rows


def run_row(row: Row, ctx: Context) -> Result:
    start = time.perf_counter()
    log = osp.join(ctx.work_dir, 'rows.log')
    try:
        with output_to(log):  # what the libraries print (warnings, logs) goes to the log, not into the table
            result = row.run(ctx)
    except Skip as e:
        result = Result(row.name, SKIP, note=str(e))
    except Failed as e:
        result = Result(row.name, FAIL, e.figure, str(e), data=e.data)
    except Exception as e:  # a row that crashes is a failed row; the table goes on
        where = traceback.extract_tb(e.__traceback__)[-1]
        msg = str(e).splitlines()[0][:160] if str(e) else ''
        at = f'{osp.basename(where.filename)}:{where.lineno}'
        result = Result(row.name, FAIL, note=f'{type(e).__name__}: {msg} ({at})')
        if ctx.device == 'cuda' and isinstance(e, torch.cuda.OutOfMemoryError):
            free_memory()
    result.name = row.name
    result.seconds = time.perf_counter() - start
    return result


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument('--only', nargs='+', default=[], metavar='ROW',
                   help='run only these rows: names, dotted prefixes (mmcv, 6b.step) or globs (train.*.amp)')
    p.add_argument('--skip', nargs='+', default=[], metavar='ROW', help='leave these rows out (same forms)')
    p.add_argument('--json', metavar='OUT', help='also write the table as JSON (rewritten after every row)')
    p.add_argument('--work-dir', help='where the synthetic data and the training runs go (default: a temporary '
                                      'folder, removed at the end)')
    p.add_argument('--batch', type=int, default=2, help='images per batch of the 6B rows (default 2)')
    p.add_argument('--size', type=int, default=504, help='image size of the 6B and attention rows (default 504)')
    p.add_argument('--depth', type=int, default=0,
                   help='blocks of the 6B rows (default: all 48); fewer for a card that cannot hold the 6B')
    p.add_argument('--list', action='store_true', help='list the rows and exit')
    p.add_argument('--train-row', nargs=2, metavar=('CONFIG', 'MODE'), help=argparse.SUPPRESS)  # one row, in a child
    p.add_argument('--cpu', action='store_true',
                   help='for developing this script: run on the CPU the rows that can (figures are not a GPU\'s)')
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    rows = [r for r in all_rows() if (not args.only or matches(r.name, args.only)) and not matches(r.name, args.skip)]
    if args.list:
        for r in all_rows():
            print(r.name)
        return EXIT_OK
    unknown = [p for p in args.only + args.skip if not any(matches(r.name, [p]) for r in all_rows())]
    if unknown:
        print(f'gpu_check: no row matches {unknown} (see --list)', file=sys.stderr)
        return EXIT_USAGE

    gpu = torch.cuda.is_available()
    device = 'cuda' if gpu else 'cpu'
    if args.train_row:  # a DeepSpeed row in its own process (train_in_subprocess): its result as JSON
        name, mode = args.train_row
        result = run_row(Row(f'train.{name}.{mode}', lambda ctx: train_in_process(ctx, name, mode)),
                         Context(args, device))
        write_json(args.json, dict(rows=[asdict(result)]))
        return EXIT_OK
    temporary = args.work_dir is None
    args.work_dir = args.work_dir or tempfile.mkdtemp(prefix='gpu_check_')
    os.makedirs(args.work_dir, exist_ok=True)
    ctx = Context(args, device)
    if not gpu:
        why = (f'torch {torch.__version__} is a CPU build' if torch.version.cuda is None else
               f'torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU')
    payload = dict(torch=torch.__version__, cuda=torch.version.cuda, device=None, rows=[])
    print(header(), flush=True)
    results: List[Result] = []
    try:
        for row in rows:
            if not gpu and not (args.cpu and not row.needs_gpu):
                result = Result(row.name, SKIP, note=f'no GPU: {why}')
            else:
                result = run_row(row, ctx)
            results.append(result)
            if row.name == 'env' and result.status == OK:
                payload['device'] = result.data.get('device', 'cpu')
            print(format_row(result), flush=True)
            if args.json:
                payload['rows'] = [asdict(r) for r in results]
                write_json(args.json, payload)
    finally:
        if temporary:
            shutil.rmtree(args.work_dir, ignore_errors=True)
    status = exit_status(results, gpu)
    counts = {s: sum(r.status == s for r in results) for s in (OK, FAIL, SKIP)}
    summary = (f'{counts[OK]} ok, {counts[FAIL]} failed, {counts[SKIP]} skipped'
               + (f'; no CUDA GPU ({why}): exit status {EXIT_NO_GPU}' if not gpu else ''))
    print('-' * 110 + f'\n{summary}', flush=True)
    if args.json:
        payload.update(rows=[asdict(r) for r in results], exit_status=status, summary=summary)
        write_json(args.json, payload)
    return status


if __name__ == '__main__':
    sys.exit(main())
