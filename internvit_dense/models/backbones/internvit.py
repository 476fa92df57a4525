"""InternViT: the vision encoder of InternVL, as a dense-prediction backbone.

One file, top to bottom: attention (with its kernel dispatch), block, model.
Parameter names follow OpenGVLab's released ``.pth`` files (``blocks.N.attn.qkv``
...), so those load without renaming; other formats are read and converted by
:mod:`internvit_dense.checkpoint`, the layer below this one.

Precision: ``dtype`` (e.g. ``'bfloat16'``) is the dtype every weight is created and
stored in, except the norm weights, which stay fp32: the norms compute their statistics
in fp32 as the released model does (timm's ``*Fp32`` norms), and their weights are
0.01% of the parameters, so keeping them exact costs nothing. Features leave the
backbone in the dtype the images came in (fp32 images from the data preprocessor ->
fp32 features for an fp32 head), whatever the weights' dtype.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmengine.logging import print_log
from mmengine.model import BaseModule
from timm.layers import (DropPath, LayerNormFp32, LayerScale, Mlp, PatchEmbed, RmsNormFp32, resample_abs_pos_embed,
                         resample_patch_embed, trunc_normal_)

from internvit_dense.checkpoint import CheckpointError, assign_tensor, open_checkpoint, torch_load

from ..registry import DET_MODELS, ENGINE_MODELS, SEG_MODELS

try:  # optional GPU extra; its absence is the normal case on a CPU
    from flash_attn import flash_attn_func
except ImportError:  # pragma: no cover - depends on the machine
    flash_attn_func = None

ARCH_PRESETS: Dict[str, dict] = {
    # InternViT-6B-224px (the segmentation / classification releases).
    '6b': dict(embed_dims=3200, depth=48, num_heads=25, mlp_dims=12800, norm_type='rms_norm',
               qk_normalization=True, qkv_bias=False, layer_norm_eps=1e-6, patch_size=14, pretrain_size=224),
    # The 448px checkpoints (v1.0/v1.2/v1.5/v2.5) are used with their last 3 blocks dropped.
    '6b-448': dict(embed_dims=3200, depth=45, num_heads=25, mlp_dims=12800, norm_type='rms_norm',
                   qk_normalization=True, qkv_bias=False, layer_norm_eps=1e-6, patch_size=14, pretrain_size=448),
    '300m': dict(embed_dims=1024, depth=24, num_heads=16, mlp_dims=4096, norm_type='layer_norm',
                 qk_normalization=False, qkv_bias=True, layer_norm_eps=1e-6, patch_size=14, pretrain_size=448),
    # The two families at a size a CPU trains in minutes: the tiny configs, tests and benchmarks all use
    # these (no patch/pretrain size: the tiny configs set theirs).
    'tiny': dict(embed_dims=96, depth=4, num_heads=4, mlp_dims=384, norm_type='rms_norm',
                 qk_normalization=True, qkv_bias=False, layer_norm_eps=1e-6),
    'tiny-300m': dict(embed_dims=96, depth=4, num_heads=4, mlp_dims=384, norm_type='layer_norm',
                      qk_normalization=False, qkv_bias=True, layer_norm_eps=1e-6),
}
ARCH_KEYS = ('embed_dims', 'depth', 'num_heads', 'mlp_dims', 'norm_type', 'qk_normalization', 'qkv_bias',
             'layer_norm_eps')
ATTN_IMPLS = ('auto', 'flash', 'sdpa', 'eager')


DTYPES = {'float32': torch.float32, 'fp32': torch.float32, 'bfloat16': torch.bfloat16, 'bf16': torch.bfloat16,
          'float16': torch.float16, 'fp16': torch.float16}


def resolve_dtype(dtype: Union[str, torch.dtype, None]) -> torch.dtype:
    """``'bfloat16'`` / ``'bf16'`` / ``torch.bfloat16`` ... -> a torch dtype; None is fp32."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise ValueError(f'InternViT weights need a floating point dtype, got {dtype}')
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f'unknown dtype {dtype!r}; one of {sorted(DTYPES)}')
    return DTYPES[dtype]


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    """Modules built inside create their parameters in ``dtype`` (never in fp32 first)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def rms_norm_through_autograd(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """The released arithmetic through torch's ``rms_norm`` and autograd: where torch has a fused kernel (a
    GPU), and what :class:`RmsNormFp32StatsFunction` replaces on a CPU."""
    return F.rms_norm(x.float(), weight.shape, eps=eps).to(x.dtype) * weight.to(x.dtype)


class RmsNormFp32StatsFunction(torch.autograd.Function):
    """RMSNorm with fp32 statistics, the released model's arithmetic (see :class:`RmsNormFp32Stats`), with
    its backward written out: torch's ``rms_norm`` on a CPU is a composite of ~8 element-wise ops whose
    autograd graph keeps an fp32 copy of the input and runs ~15 passes over it backward. Here the forward is
    the same ops in the same order (bit-identical output), normalising in place in its own fp32 copy, and
    backward keeps only the input (in its own dtype: for q and k, views of the qkv output attention keeps
    anyway) and the normalised tokens, 4 bytes per element in bf16 where autograd keeps 6 (an fp32 copy of
    the input too); the gradient is ``rstd * (g*w - x * rstd^2 * mean(g*w * x))``. Forward + backward 1.40-1.49x
    faster than the composite at 6B width in bf16 (``benchmarks/backbone_parts.py``). Written here because torch
    has no fused CPU kernel for it (``_fused_rms_norm`` is that same composite on a CPU)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        xf = x.to(torch.promote_types(x.dtype, torch.float32))  # fp32 at least (fp64 stays, for gradcheck)
        rstd = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True).add_(eps))
        # in place only in a copy of our own: in fp32, xf is x
        normed = (xf * rstd if xf.dtype == x.dtype else xf.mul_(rstd)).to(x.dtype)
        ctx.save_for_backward(x, rstd, weight, normed)
        return normed * weight.to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, rstd, weight, normed = ctx.saved_tensors
        grad_weight = grad_x = None
        if ctx.needs_input_grad[1]:  # as autograd computes ``normed * weight``'s: in the compute dtype
            grad_weight = (grad * normed).sum(tuple(range(grad.ndim - 1))).to(weight.dtype)
        if ctx.needs_input_grad[0]:
            xf = x.to(rstd.dtype)
            grad_normed = (grad * weight.to(grad.dtype)).to(rstd.dtype)  # a new tensor: written in place below
            dot = (grad_normed * xf).mean(-1, keepdim=True).mul_(rstd.pow(3))
            grad_x = torch.addcmul(grad_normed.mul_(rstd), xf, dot, value=-1).to(x.dtype)
        return grad_x, grad_weight, None


class RmsNormFp32Stats(RmsNormFp32):
    """RMSNorm as the released InternViT computes it (InternVL's ``InternRMSNorm``, also transformers'):
    statistics and normalisation in fp32, the result cast back to the input's dtype, then the weight
    applied in that dtype. timm's ``RmsNormFp32`` applies the weight in fp32 before the cast: identical
    in fp32; in bf16 it keeps an fp32 copy of the normalised tokens for the weight's gradient (4 per
    block, +5% training memory at 6B width) and runs that multiply and its backward at twice the bytes.
    On a CPU computed by :class:`RmsNormFp32StatsFunction` (same forward, a backward of fewer passes); on a
    GPU torch's ``rms_norm`` is one fused kernel each way, and is used as it is.
    """

    @staticmethod
    def saves_its_input(x: torch.Tensor) -> bool:
        """Whether backward keeps ``x`` itself (a view stays a view) rather than an fp32 copy of it."""
        return x.device.type == 'cpu'

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.saves_its_input(x):
            return RmsNormFp32StatsFunction.apply(x, self.weight, self.eps)
        return rms_norm_through_autograd(x, self.weight, self.eps)


def to_patches(images: torch.Tensor, patch: Tuple[int, int]) -> torch.Tensor:
    """(B, C, H, W) whole patches -> (B, h*w, C*ph*pw), each row one patch in the conv kernel's (C, ph, pw) order."""
    B, C, H, W = images.shape
    (ph, pw), (h, w) = patch, (H // patch[0], W // patch[1])
    return images.reshape(B, C, h, ph, w, pw).permute(0, 2, 4, 1, 3, 5).reshape(B, h * w, C * ph * pw)


def from_patches(rows: torch.Tensor, image_shape: torch.Size, patch: Tuple[int, int]) -> torch.Tensor:
    """The inverse of :func:`to_patches`."""
    B, C, H, W = image_shape
    (ph, pw), (h, w) = patch, (H // patch[0], W // patch[1])
    return rows.reshape(B, h, w, C, ph, pw).permute(0, 3, 1, 4, 2, 5).reshape(B, C, H, W)


class PatchGemmFunction(torch.autograd.Function):
    """A conv whose kernel equals its stride, as one GEMM over the patches. Backward keeps the images (alive
    anyway: the batch), not the patch matrix autograd would keep, and makes that matrix again for the weight
    gradient (a copy of the images): no more memory than the conv it replaces. Gradients as autograd's of
    ``F.linear`` (the same GEMMs and sum)."""

    @staticmethod
    def forward(ctx, images: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                patch: Tuple[int, int]) -> torch.Tensor:
        ctx.save_for_backward(images, weight)
        ctx.patch, ctx.bias_dtype = patch, None if bias is None else bias.dtype
        return F.linear(to_patches(images, patch), weight.reshape(weight.shape[0], -1), bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        images, weight = ctx.saved_tensors
        rows = grad.reshape(-1, grad.shape[-1])
        # in the dtype the forward's GEMM ran in (autocast's, where it was on), each gradient in its input's dtype
        grad_images = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:  # not in training: the images need no gradient
            kernel = weight.reshape(weight.shape[0], -1).to(rows.dtype)
            grad_images = from_patches(rows @ kernel, images.shape, ctx.patch).to(images.dtype)
        if ctx.needs_input_grad[1]:
            patches = to_patches(images, ctx.patch).reshape(rows.shape[0], -1).to(rows.dtype)
            grad_weight = (rows.t() @ patches).reshape(weight.shape).to(weight.dtype)
        if ctx.needs_input_grad[2]:
            grad_bias = rows.sum(0).to(ctx.bias_dtype)
        return grad_images, grad_weight, grad_bias, None


class PatchEmbedGemm(PatchEmbed):
    """timm's ``PatchEmbed`` (same ``proj`` conv weights, same checkpoints), computed by
    :class:`PatchGemmFunction`: on a CPU the backward of mkldnn's bf16 strided conv took 92 ms where the GEMMs
    take 7.7 (6B width, 4 x 224; the patch embedding's weight gradient in every full-tuning step). Inputs are
    whole patches (``prepare_tokens`` crops)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        ph, pw = self.patch_size
        if H % ph or W % pw:
            raise ValueError(f'PatchEmbedGemm takes whole {ph}x{pw} patches, got {H}x{W}')
        return self.norm(PatchGemmFunction.apply(x, self.proj.weight, self.proj.bias, (ph, pw)))


def make_norm(norm_type: str, dims: int, eps: float) -> nn.Module:
    # Statistics in fp32 as in the released model (bf16 statistics drift over 48 blocks); weights in fp32 too.
    with default_dtype(torch.float32):
        if norm_type == 'rms_norm':
            return RmsNormFp32Stats(dims, eps=eps)
        if norm_type == 'layer_norm':
            return LayerNormFp32(dims, eps=eps)
    raise ValueError(f"norm_type must be 'rms_norm' or 'layer_norm', got {norm_type!r}")


@functools.lru_cache(maxsize=None)
def cuda_capability(device: torch.device) -> Tuple[int, int]:
    """(major, minor) compute capability of a CUDA device (sm80 = Ampere A100)."""
    return torch.cuda.get_device_capability(device)


def flash_unusable_reason(q: torch.Tensor) -> Optional[str]:
    """Why flash-attn cannot run on ``q`` (the query as the kernel would get it), or None if it can.

    Decided on what the kernel sees: under autocast with fp32 weights, q/k/v come out of the qkv
    projection in bf16/fp16 even though the block's input is fp32. flash-attn 2 runs on Ampere or
    newer (sm80+); on a V100 or T4 it fails inside the kernel.
    """
    if flash_attn_func is None:
        return 'flash-attn is not installed (pip install internvit-dense[flash])'
    if not q.is_cuda:
        return f'flash-attn runs on CUDA, the query is on {q.device.type}'
    if q.dtype not in (torch.float16, torch.bfloat16):
        return f'flash-attn takes fp16/bf16 q/k/v, these are {str(q.dtype).replace("torch.", "")}'
    major, minor = cuda_capability(q.device)
    if (major, minor) < (8, 0):
        return f'flash-attn 2 needs an Ampere or newer GPU (sm80+), this one is sm{major}{minor}'
    return None


def flash_usable(q: torch.Tensor) -> bool:
    return flash_unusable_reason(q) is None


def select_attn_impl(requested: str, q: torch.Tensor) -> str:
    """The kernel that will run for the query ``q``: ``auto`` picks flash-attn where it can run, else SDPA;
    an explicit ``'flash'`` that cannot run is an error saying why."""
    if requested == 'auto':
        return 'flash' if flash_usable(q) else 'sdpa'
    if requested == 'flash':
        reason = flash_unusable_reason(q)
        if reason is not None:
            raise RuntimeError(f"attn_impl='flash' cannot run: {reason}; use attn_impl='auto' or 'sdpa'")
    return requested


def window_partition(x: torch.Tensor, hw: Tuple[int, int], window: int) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """(B, H*W, C) tokens -> (B*nW, window*window, C), padding the grid to whole windows."""
    B, _, C = x.shape
    H, W = hw
    x = x.view(B, H, W, C)
    pad_h, pad_w = (-H) % window, (-W) % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    Hp, Wp = H + pad_h, W + pad_w
    x = x.view(B, Hp // window, window, Wp // window, window, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window * window, C), (Hp, Wp)


def window_unpartition(x: torch.Tensor, hw: Tuple[int, int], padded_hw: Tuple[int, int],
                       window: int) -> torch.Tensor:
    Hp, Wp = padded_hw
    H, W = hw
    C = x.shape[-1]
    B = x.shape[0] // ((Hp // window) * (Wp // window))
    x = x.view(B, Hp // window, Wp // window, window, window, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(B, Hp, Wp, C)[:, :H, :W].reshape(B, H * W, C)


class Attention(nn.Module):
    """Multi-head self-attention with InternViT's qk-normalisation over all channels."""

    def __init__(self, dims: int, num_heads: int, qkv_bias: bool = False, qk_normalization: bool = False,
                 norm_type: str = 'rms_norm', norm_eps: float = 1e-6, attn_impl: str = 'auto'):
        super().__init__()
        if dims % num_heads:
            raise ValueError(f'embed_dims {dims} is not divisible by num_heads {num_heads}')
        if attn_impl not in ATTN_IMPLS:
            raise ValueError(f'attn_impl must be one of {ATTN_IMPLS}, got {attn_impl!r}')
        self.num_heads = num_heads
        self.head_dim = dims // num_heads
        self.scale = self.head_dim ** -0.5
        self.attn_impl = attn_impl
        # One fused GEMM for q, k and v.
        self.qkv = nn.Linear(dims, dims * 3, bias=qkv_bias)
        self.qk_normalization = qk_normalization
        if qk_normalization:
            self.q_norm = make_norm(norm_type, dims, norm_eps)
            self.k_norm = make_norm(norm_type, dims, norm_eps)
        self.proj = nn.Linear(dims, dims)

    def forward(self, x: torch.Tensor, key_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``key_mask`` (B, N), True where a token may be attended to (padding is not)."""
        B, N, C = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        if self.qk_normalization:
            # Normalised before the head split: the statistics span all heads.
            q, k = self.q_norm(q), self.k_norm(k)
            if not (isinstance(self.q_norm, RmsNormFp32Stats) and self.q_norm.saves_its_input(q)):
                # The norms keep fp32 copies of q and k for backward; a view v, saved by attention, would keep
                # the whole qkv output alive too: copied out. (Where they keep their inputs, views of that
                # output, it is alive anyway.)
                v = v.contiguous()
        impl = select_attn_impl(self.attn_impl, q)  # on what the kernel gets: bf16 under autocast
        if key_mask is not None and impl == 'flash':
            impl = 'sdpa'  # flash_attn_func takes no mask; only padded windows get here
        heads = (B, N, self.num_heads, self.head_dim)
        if impl == 'flash':
            out = flash_attn_func(q.reshape(heads), k.reshape(heads), v.reshape(heads), softmax_scale=self.scale)
        else:
            q, k, v = (t.reshape(heads).transpose(1, 2) for t in (q, k, v))
            mask = None if key_mask is None else key_mask[:, None, None, :]
            if impl == 'sdpa':
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
            else:
                attn = (q * self.scale) @ k.transpose(-2, -1)
                if mask is not None:
                    attn = attn.masked_fill(~mask, float('-inf'))
                out = attn.softmax(dim=-1) @ v
            out = out.transpose(1, 2)
        return self.proj(out.reshape(B, N, C))


class Block(nn.Module):
    """Pre-norm transformer block with layer scale on both residual branches.

    With ``window_size`` the patch tokens attend within windows (ViTDet), the grid
    padded to whole windows and the padding masked out. The cls token joins every
    window and takes the mean of its per-window outputs, so a window that covers
    the whole grid is exactly global attention.
    """

    def __init__(self, dims: int, num_heads: int, mlp_dims: int, qkv_bias: bool, qk_normalization: bool,
                 norm_type: str, layer_norm_eps: float, layer_scale_init: float = 0.1, drop_path: float = 0.0,
                 attn_impl: str = 'auto', window_size: int = 0):
        super().__init__()
        self.window_size = window_size
        self.norm1 = make_norm(norm_type, dims, layer_norm_eps)
        self.attn = Attention(dims, num_heads, qkv_bias, qk_normalization, norm_type, layer_norm_eps, attn_impl)
        self.ls1 = LayerScale(dims, init_values=layer_scale_init)
        self.norm2 = make_norm(norm_type, dims, layer_norm_eps)
        self.mlp = Mlp(dims, hidden_features=mlp_dims, act_layer=nn.GELU)
        self.ls2 = LayerScale(dims, init_values=layer_scale_init)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def _attend(self, x: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
        if not self.window_size:
            return self.attn(x)
        B, _, C = x.shape
        w = self.window_size
        windows, padded_hw = window_partition(x[:, 1:], hw, w)
        n_win = windows.shape[0] // B
        key_mask = None
        if padded_hw != tuple(hw):
            real = window_partition(x.new_ones(1, hw[0] * hw[1], 1), hw, w)[0][..., 0].bool()
            key_mask = torch.cat([real.new_ones(n_win, 1), real], dim=1).repeat(B, 1)
        cls_tok = x[:, :1].repeat_interleave(n_win, dim=0)
        out = self.attn(torch.cat([cls_tok, windows], dim=1), key_mask)
        cls_out = out[:, :1].reshape(B, n_win, 1, C).mean(dim=1)
        return torch.cat([cls_out, window_unpartition(out[:, 1:], hw, padded_hw, w)], dim=1)

    def drop_path_scales(self, x: torch.Tensor) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        """The per-sample scales (B, 1, 1) of the two residual branches, 0 or 1 / keep, while drop path is
        active; else None. timm's DropPath draws them (applied to ones: the draws it would make on the
        branches). Drawn apart from the block's arithmetic so that one compiled block serves blocks of every
        drop rate: a rate inside the graph is a constant, and would cost a compilation per block."""
        if not (self.training and isinstance(self.drop_path, DropPath) and self.drop_path.drop_prob > 0):
            return None, None
        ones = x.new_ones((x.shape[0],) + (1,) * (x.ndim - 1))
        return self.drop_path(ones), self.drop_path(ones)

    def residual_branches(self, x: torch.Tensor, hw: Tuple[int, int], scale1: Optional[torch.Tensor] = None,
                          scale2: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The block's arithmetic, given the drop path scales (see :meth:`drop_path_scales`)."""
        branch = self.ls1(self._attend(self.norm1(x), hw))
        x = x + (branch if scale1 is None else branch * scale1)
        branch = self.ls2(self.mlp(self.norm2(x)))
        return x + (branch if scale2 is None else branch * scale2)

    def forward(self, x: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
        return self.residual_branches(x, hw, *self.drop_path_scales(x))


_COMPILED_BLOCKS: Dict[tuple, Callable] = {}


def compiled_block(options: Optional[dict] = None) -> Callable:
    """``Block.residual_branches`` compiled by ``torch.compile(**options)``, one per set of options for the
    whole process: the block is an input of the graph (its parameters are graph inputs), so every block of
    every InternViT of the same shape runs the one compiled graph, and compile time does not grow with depth.
    ``fullgraph=True``: a graph break is an error, not a silent slowdown."""
    options = dict(options or {})
    key = tuple(sorted((k, repr(v)) for k, v in options.items()))
    if key not in _COMPILED_BLOCKS:
        _COMPILED_BLOCKS[key] = torch.compile(Block.residual_branches, **{'fullgraph': True, **options})
    return _COMPILED_BLOCKS[key]


def lora_lib():
    from . import lora  # imports peft: only for a backbone with lora=...
    return lora


def resolve_arch(arch: Union[str, dict]) -> dict:
    if isinstance(arch, str):
        if arch not in ARCH_PRESETS:
            raise KeyError(f'unknown InternViT arch {arch!r}; presets are {sorted(ARCH_PRESETS)} or a dict')
        return dict(ARCH_PRESETS[arch])
    arch = dict(arch)
    missing = [k for k in ('embed_dims', 'depth', 'num_heads') if k not in arch]
    if missing:
        raise KeyError(f'custom InternViT arch lacks {missing}')
    arch.setdefault('mlp_dims', arch['embed_dims'] * 4)
    arch.setdefault('norm_type', 'rms_norm')
    arch.setdefault('qk_normalization', True)
    arch.setdefault('qkv_bias', False)
    arch.setdefault('layer_norm_eps', 1e-6)
    return arch


_BUILD_DEVICE: List[Optional[str]] = [None]


@contextlib.contextmanager
def backbones_on_meta():
    """Every InternViT built inside (also inside an adapter or a classifier) is built on the meta
    device, without random init, for a checkpoint to fill (``internvit_dense.apis.build_trained``)."""
    _BUILD_DEVICE.append('meta')
    try:
        yield
    finally:
        _BUILD_DEVICE.pop()


_FILL_FROM_PRETRAINED: List[bool] = [False]
# the training checkpoint a run loads over its model (load_from / --resume): {'path': ..., 'state_dict': ...}
_TRAINED_CHECKPOINT: List[Optional[dict]] = [None]


@contextlib.contextmanager
def backbones_from_pretrained(trained: Optional[str] = None):
    """Every InternViT built inside whose ``init_cfg`` names a checkpoint (``type='Pretrained'``) is built
    on the meta device and filled from that checkpoint right away, tensor by tensor from the memory-mapped
    file, instead of being randomly initialised and overwritten later by ``init_weights``: what training
    does (engine/training.py). At 6B the random init alone is minutes per process and a second copy of
    the weights; loading here, not in ``init_weights``, because mmengine moves the model to its device
    (and wraps it in DDP) before it calls ``init_weights``, and meta tensors cannot be moved.

    ``trained``: the training checkpoint (``iter_N.pth``) the run loads over the whole model once it is built
    (``load_from``, ``--resume``). An InternViT without a pretrained ``init_cfg`` whose every tensor that file
    holds, under one prefix (``backbone.``), is built on the meta device and filled from the file as well: the
    values mmengine's load then copies in are the same ones, and the random init they would overwrite never runs.
    One that the file does not hold whole is built and randomly initialised as before (mmengine's load is not
    strict)."""
    _FILL_FROM_PRETRAINED.append(True)
    _TRAINED_CHECKPOINT.append(dict(path=str(trained)) if trained else None)
    try:
        yield
    finally:
        _FILL_FROM_PRETRAINED.pop()
        _TRAINED_CHECKPOINT.pop()


@ENGINE_MODELS.register_module()
@SEG_MODELS.register_module()
@DET_MODELS.register_module()
class InternViT(BaseModule):
    """InternViT-6B / 300M backbone.

    Args:
        arch: ``'6b'``, ``'6b-448'``, ``'300m'``, ``'tiny'``, ``'tiny-300m'`` or a dict with ``embed_dims``, ``depth``,
            ``num_heads`` and optionally ``mlp_dims``, ``norm_type``, ``qk_normalization``,
            ``qkv_bias``, ``layer_norm_eps``, ``patch_size``, ``pretrain_size``.
        img_size: the usual input size (crop); any other size works too.
        patch_size / pretrain_size: default to the preset's; the position embedding is
            held at the ``pretrain_size`` grid and interpolated to each input's grid.
        out_indices: blocks whose outputs :meth:`forward` returns (negative counts from the end).
        frozen: no gradients, no autograd graph, always in eval mode.
        attn_impl: ``auto`` (flash-attn where it can run: installed, q/k/v in fp16/bf16 on CUDA, which
            autocast gives fp32 weights too, an sm80+ GPU; else SDPA), ``flash``, ``sdpa`` or ``eager``.
        window_size / global_blocks: ViTDet-style window attention in every block except
            ``global_blocks`` (0 disables windows).
        dtype: what the weights are created and stored in (``'bfloat16'`` for a frozen 6B:
            11 GB instead of 22 GB); norm weights stay fp32. Default fp32.
        device: where the weights are created; ``'meta'`` builds without memory and without
            random init, for a checkpoint to fill (``from_pretrained``, ``load_pretrained``,
            ``internvit_dense.apis.build_trained``).
        compile: run the blocks through ``torch.compile`` (inductor): one compiled block serves every
            block, so compile time (paid on the first call of each input shape and mode) does not grow with
            depth. ``True``, or a dict of ``torch.compile`` options (``dict(mode='max-autotune')``).
            Off by default: see docs/benchmarks.md for what it buys where.
        lora: low-rank adapters through peft, ``dict(rank=16, alpha=32, dropout=0.05, targets=(...),
            blocks=None)``: the base weights freeze, only the adapters train (with ``frozen=False``); see
            :mod:`.lora` (checkpoints then hold the adapters, not the pretrained weights).
    """

    def __init__(self,
                 arch: Union[str, dict] = '6b',
                 img_size: int = 224,
                 patch_size: Optional[int] = None,
                 pretrain_size: Optional[int] = None,
                 in_channels: int = 3,
                 drop_path_rate: float = 0.0,
                 layer_scale_init: float = 0.1,
                 out_indices: Sequence[int] = (-1,),
                 with_cp: bool = False,
                 frozen: bool = False,
                 attn_impl: str = 'auto',
                 window_size: int = 0,
                 global_blocks: Sequence[int] = (),
                 dtype: Union[str, torch.dtype, None] = None,
                 device: Union[str, torch.device, None] = None,
                 compile: Union[bool, dict] = False,
                 lora: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        if not isinstance(compile, (bool, dict)):
            raise TypeError(f'compile must be True/False or a dict of torch.compile options, got {compile!r}')
        # not ``self.compile``: that is nn.Module's method
        self.compile_options = (dict(compile) if isinstance(compile, dict) else {}) if compile else None
        self.weight_dtype = resolve_dtype(dtype)
        device = device or _BUILD_DEVICE[-1]
        fill_now = device is None and _FILL_FROM_PRETRAINED[-1] and self._pretrained_checkpoint() is not None
        # LoRA checkpoints hold the adapters, not the base weights: those come from a pretrained file only
        trained = _TRAINED_CHECKPOINT[-1] if device is None and not fill_now and not lora else None
        if fill_now or trained:
            device = 'meta'  # no random init: the checkpoint fills it below

        def build(on):
            with default_dtype(self.weight_dtype), (torch.device(on) if on else contextlib.nullcontext()):
                self._build(arch, img_size, patch_size, pretrain_size, in_channels, drop_path_rate, layer_scale_init,
                            out_indices, with_cp, attn_impl, window_size, global_blocks)
        build(device)
        from_trained = self._held_by(trained) if trained else None
        if trained and from_trained is None:
            build(None)  # the file does not hold this backbone whole: built and randomly initialised as before
        self.frozen = frozen
        if frozen:
            self.requires_grad_(False)
            self.eval()
        if self.compile_options is not None:
            print_log(f'InternViT: its {self.depth} blocks run one block compiled by torch.compile('
                      f'{self.compile_options or ""}), compiled on the first call of each input shape',
                      logger='current')
        if not self.pos_embed.is_meta:
            self._random_init()
        self.lora = None
        if lora:
            if frozen:
                raise ValueError('InternViT: frozen=True trains nothing in the backbone and lora=... trains its '
                                 'adapters: set frozen=False with lora (the base weights stay frozen)')
            from .lora import attach_lora
            pretrained = (init_cfg or {}).get('type') == 'Pretrained'
            self.lora = attach_lora(self, lora, self.depth, adapters_only=pretrained)
        if fill_now:  # after the adapters: loading maps their names, records the base and initialises them
            self.init_weights()  # marks it initialised: mmengine's init_weights of the model skips it
        if from_trained is not None:
            prefix, tensors = from_trained
            for name, value in tensors.items():
                assign_tensor(self, name, value)
            self._is_init = True  # mmengine's init_weights of the model skips it; its load_from copies the same in
            print_log(f'InternViT: built on the meta device and filled from {trained["path"]} ({prefix}*, '
                      f'{len(tensors)} tensors), which the run loads over the model', logger='current')

    def _pretrained_checkpoint(self) -> Optional[str]:
        init_cfg = self.init_cfg if isinstance(self.init_cfg, dict) else {}
        return init_cfg.get('checkpoint') if init_cfg.get('type') == 'Pretrained' else None

    def _held_by(self, trained: dict) -> Optional[Tuple[str, Dict[str, torch.Tensor]]]:
        """(prefix, {own name: tensor}) when the training checkpoint ``trained`` holds every tensor of this
        (meta-built) InternViT under exactly one prefix with its shape, else None."""
        if 'state_dict' not in trained:  # memory-mapped once for every InternViT of the model
            state = torch_load(trained['path'])
            sd = state.get('state_dict', state) if isinstance(state, dict) else {}
            trained['state_dict'] = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in sd.items()
                                     if torch.is_tensor(v)}
        sd = trained['state_dict']
        own = self.state_dict(keep_vars=True)
        prefixes = [k[:-len('pos_embed')] for k in sd if k.endswith('pos_embed')]
        found = [p for p in prefixes if all(p + n in sd and sd[p + n].shape == t.shape for n, t in own.items())]
        if len(found) != 1:  # not held, or two backbones of this shape (which is which cannot be told)
            return None
        return found[0], {n: sd[found[0] + n] for n in own}

    def _build(self, arch, img_size, patch_size, pretrain_size, in_channels, drop_path_rate, layer_scale_init,
               out_indices, with_cp, attn_impl, window_size, global_blocks):
        self.arch = resolve_arch(arch)
        a = self.arch
        self.embed_dims, self.depth, self.num_heads = a['embed_dims'], a['depth'], a['num_heads']
        self.patch_size = patch_size or a.get('patch_size', 14)
        self.pretrain_size = pretrain_size or a.get('pretrain_size', img_size)
        self.img_size = img_size
        self.with_cp = with_cp
        self.out_indices = self._normalise_indices(out_indices)

        self.patch_embed = PatchEmbedGemm(img_size, self.patch_size, in_channels, self.embed_dims,
                                          strict_img_size=False, dynamic_img_pad=False)
        self.pretrain_grid = (self.pretrain_size // self.patch_size,) * 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, self.embed_dims))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + math.prod(self.pretrain_grid), self.embed_dims))

        global_blocks = {i % self.depth for i in global_blocks}
        dpr = [drop_path_rate * i / max(self.depth - 1, 1) for i in range(self.depth)]
        self.blocks = nn.ModuleList([
            Block(self.embed_dims, self.num_heads, a['mlp_dims'], a['qkv_bias'], a['qk_normalization'],
                  a['norm_type'], a['layer_norm_eps'], layer_scale_init, dpr[i], attn_impl,
                  window_size=0 if i in global_blocks else window_size)
            for i in range(self.depth)
        ])

    def _normalise_indices(self, indices: Sequence[int]) -> List[int]:
        out = []
        for i in indices:
            if not -self.depth <= i < self.depth:
                raise IndexError(f'out index {i} is outside the {self.depth} blocks of this InternViT')
            out.append(i % self.depth)
        return out

    # ------------------------------------------------------------------ weights
    def _random_init(self):
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def init_weights(self):
        """Loads ``init_cfg=dict(type='Pretrained', checkpoint=...)`` in any supported format."""
        if self.init_cfg and self.init_cfg.get('type') == 'Pretrained':
            self.load_pretrained(self.init_cfg['checkpoint'], prefix=self.init_cfg.get('prefix'))
            self._is_init = True
        else:
            super().init_weights()

    def arch_kwargs(self) -> dict:
        """What a checkpoint's config.json records of this model (see :mod:`internvit_dense.checkpoint.formats`)."""
        return dict(arch=dict(self.arch), patch_size=self.patch_size, pretrain_size=self.pretrain_size,
                    in_channels=self.patch_embed.proj.in_channels)

    @classmethod
    def from_pretrained(cls, path: str, dtype: Union[str, torch.dtype, None] = None, **kwargs) -> 'InternViT':
        """The model a checkpoint describes, built on the meta device and filled from the file tensor by
        tensor in ``dtype`` (default fp32): no random-init copy, no second copy of a shard.

        A Hugging Face directory describes its architecture in ``config.json``; a ``.pth``
        file needs ``arch=`` (``'6b'``, ``'6b-448'``, ``'300m'`` or a dict). ``kwargs`` override
        the file's and are passed on to :class:`InternViT`.
        """
        reader = open_checkpoint(path)
        from_file = reader.arch()
        if from_file is not None:
            kwargs = {**from_file, **kwargs}
        elif 'arch' not in kwargs:
            raise CheckpointError(f'{path} carries no config.json: pass arch= to say which InternViT it holds')
        with torch.device('meta'):
            model = cls(dtype=dtype, **kwargs)
        try:
            model.load_pretrained(reader)
        except CheckpointError as e:
            if from_file is None:
                raise
            told = {k: v for k, v in from_file.items() if k not in kwargs or kwargs[k] == v}
            raise CheckpointError(f'{e}; the architecture came from {reader.path}/config.json ({told}), which does '
                                  'not describe the weights beside it: fix config.json, or override it with arch=... '
                                  '(and patch_size=...)') from e
        return model

    def load_pretrained(self, path, prefix: Optional[str] = None, strict: bool = True, logger: str = 'current') -> dict:
        """Fills this model from a checkpoint of any supported format (path or an open ``CheckpointReader``).

        Each tensor is resized where it must be (position embedding to this model's grid, patch
        embedding to its patch size), cast to the dtype this model holds it in and assigned (on
        the meta device) or copied in, one at a time. Keys the model does not have
        (``clip_projector.*``, a chat model's language model, blocks beyond the model's depth) are
        reported and skipped; keys the model has and the checkpoint lacks are an error when ``strict``.
        Returns ``dict(format=..., missing=[...], unexpected=[...])``.
        """
        reader = path if hasattr(path, 'tensors') else open_checkpoint(path, prefix)
        own = dict(self.named_parameters())
        # {name in the file: parameter path}; with LoRA a target's weight lives in its peft base_layer
        paths = {n: n for n in own} if self.lora is None else lora_lib().pretrained_names(self)
        loaded, unexpected = set(), []
        for name, value in reader.tensors():
            if name not in paths:
                unexpected.append(name)
                continue
            assign_tensor(self, paths[name], self._fit_pretrained(name, value, own[paths[name]]))
            loaded.add(name)
            del value
        unexpected += reader.ignored
        missing = [n for n in paths if n not in loaded]
        own = {n: own[p] for n, p in paths.items()}
        where = f'{reader.path} ({reader.format.name})'
        if unexpected:
            shown = sorted(unexpected)
            print_log(f'InternViT: ignored {len(unexpected)} checkpoint keys the backbone does not have: '
                      f'{shown[:8]}{" ..." if len(shown) > 8 else ""}', logger=logger, level=logging.WARNING)
        if missing and (strict or any(own[n].is_meta for n in missing)):
            raise CheckpointError(f'{where} lacks {len(missing)} parameters of this InternViT, e.g. '
                                  f'{missing[:8]}: wrong architecture or an incomplete checkpoint')
        if self.frozen:
            self.requires_grad_(False)
        if self.lora is not None:
            self.lora.base_loaded(reader.path)  # recorded in checkpoints; refuses the wrong base of loaded adapters
            lora_lib().init_meta_adapters(self)
        print_log(f'InternViT: loaded {len(loaded)} tensors from {where} into {str(self.weight_dtype)[6:]} weights',
                  logger=logger)
        return dict(format=reader.format.name, missing=missing, unexpected=unexpected)

    def _fit_pretrained(self, name: str, value: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
        """A checkpoint tensor resized to this model's grid and patch size where it differs."""
        if name == 'pos_embed' and value.shape != param.shape and value.shape[-1] == param.shape[-1]:
            value = resample_abs_pos_embed(value.reshape(1, -1, value.shape[-1]).float(), list(self.pretrain_grid),
                                           num_prefix_tokens=1, interpolation='bicubic', antialias=False)
        elif name == 'cls_token' and value.ndim == 2:
            value = value.reshape(param.shape)
        elif (name == 'patch_embed.proj.weight' and value.shape[:2] == param.shape[:2]
              and value.shape[2:] != param.shape[2:]):
            value = resample_patch_embed(value.float(), list(param.shape[2:]), interpolation='bicubic',
                                         antialias=False)
        return value

    # ----------------------------------------------------------------- modes
    def train(self, mode: bool = True):
        return super().train(mode and not self.frozen)

    # --------------------------------------------------------------- forward
    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype the blocks compute in: their weights' (``dtype=``, or a later ``.to()`` of the model)."""
        return self.patch_embed.proj.weight.dtype

    def interpolate_pos_embed(self, grid: Tuple[int, int]) -> torch.Tensor:
        if tuple(grid) == self.pretrain_grid:
            return self.pos_embed
        return resample_abs_pos_embed(self.pos_embed, list(grid), list(self.pretrain_grid),
                                      num_prefix_tokens=1, interpolation='bicubic', antialias=False)

    def frozen_context(self, tokens: Optional[torch.Tensor] = None):
        """No autograd graph in a frozen backbone: there is nothing to backpropagate into. Unless tokens
        given to its blocks need gradients (a ViT-Adapter's injected tokens): then the graph passes
        through the frozen blocks. Images never make a graph in a frozen backbone."""
        needs_graph = tokens is not None and tokens.requires_grad
        return torch.no_grad() if self.frozen and not needs_graph else contextlib.nullcontext()

    def prepare_tokens(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """Images (B, 3, H, W) -> tokens (B, 1 + h*w, C) with position embedding, and the grid (h, w)."""
        if x.ndim != 4:
            raise ValueError(f'InternViT expects images of shape (B, C, H, W), got {tuple(x.shape)}')
        grid = (x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size)
        if min(grid) < 1:
            raise ValueError(f'input {tuple(x.shape[-2:])} is smaller than one {self.patch_size}px patch')
        with self.frozen_context():
            # A partial patch at the right/bottom edge is dropped, as a strided conv would.
            x = x[..., :grid[0] * self.patch_size, :grid[1] * self.patch_size]
            x = self.patch_embed(x.to(self.compute_dtype))
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
            return x + self.interpolate_pos_embed(grid).to(x.dtype), grid

    def run_blocks(self, x: torch.Tensor, grid: Tuple[int, int], start: int = 0,
                   end: Optional[int] = None) -> torch.Tensor:
        """Blocks ``start`` .. ``end - 1`` on tokens (B, 1 + h*w, C), checkpointed with ``with_cp``
        wherever a graph is being recorded (also in a frozen ViT whose input needs gradients). The blocks
        compute in the weights' dtype; the tokens come back in the dtype they came in (an fp32 adapter's)."""
        dtype = x.dtype
        with self.frozen_context(x):
            x = x.to(self.compute_dtype)
            for blk in self.blocks[start:end]:
                # LoRA: the tokens need no gradient but the blocks' adapters do
                if self.with_cp and (x.requires_grad or self.lora is not None) and torch.is_grad_enabled():
                    x = cp.checkpoint(self.run_block, blk, x, grid, use_reentrant=False)
                else:
                    x = self.run_block(blk, x, grid)
        return x.to(dtype)

    def run_block(self, blk: Block, x: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
        """One block, compiled with ``compile`` (its drop path drawn outside the compiled graph)."""
        if self.compile_options is None:
            return blk(x, grid)
        return compiled_block(self.compile_options)(blk, x, grid, *blk.drop_path_scales(x))

    def _collect(self, x: torch.Tensor, indices: Sequence[int]) -> Tuple[List[torch.Tensor], Tuple[int, int]]:
        outs, start = {}, 0
        out_dtype = x.dtype  # features leave in the dtype the images came in: the head's
        x, grid = self.prepare_tokens(x)
        for i in sorted(set(indices)):
            x = self.run_blocks(x, grid, start, i + 1)
            outs[i] = x.to(out_dtype)
            start = i + 1
        return [outs[i] for i in indices], grid

    def get_layer_depth(self, param_name: str, prefix: str = '') -> Tuple[int, int]:
        """(layer depth, number of layers) of a parameter, for layer-wise lr decay (mmpretrain's interface).

        Embeddings are layer 0, block ``i`` is layer ``i + 1``; a name outside this backbone (neck,
        heads) is the last layer, ``depth + 1``, of ``depth + 2``.
        """
        num_layers = self.depth + 2
        if not param_name.startswith(prefix):
            return num_layers - 1, num_layers
        name = param_name[len(prefix):]
        if name in ('cls_token', 'pos_embed') or name.startswith('patch_embed.'):
            return 0, num_layers
        if name.startswith('blocks.'):
            return int(name.split('.')[1]) + 1, num_layers
        return num_layers - 1, num_layers

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens (B, 1 + h*w, C) of the last block, cls token first."""
        return self._collect(x, [self.depth - 1])[0][0]

    def get_intermediate_layers(self, x: torch.Tensor, n: Union[int, Sequence[int]] = 1, reshape: bool = False,
                                return_class_token: bool = False) -> Tuple:
        """Outputs of the last ``n`` blocks (or of the blocks listed in ``n``), DINOv2-style.

        Each output is the patch tokens (B, h*w, C), or (B, C, h, w) with ``reshape``;
        with ``return_class_token`` each is a pair (patch tokens, cls token (B, C)).
        """
        indices = list(range(self.depth - n, self.depth)) if isinstance(n, int) else self._normalise_indices(n)
        feats, (h, w) = self._collect(x, indices)
        outputs = []
        for f in feats:
            cls_tok, patches = f[:, 0], f[:, 1:]
            if reshape:
                patches = patches.transpose(1, 2).reshape(f.shape[0], self.embed_dims, h, w)
            outputs.append((patches, cls_tok) if return_class_token else patches)
        return tuple(outputs)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Feature maps (B, C, h, w) of the ``out_indices`` blocks, for mmseg/mmdet necks and heads."""
        return self.get_intermediate_layers(x, self.out_indices, reshape=True)
