"""ViT-Adapter around InternViT: a multi-scale pyramid for dense prediction from a plain ViT.

A small conv network (the spatial prior) sees the image at strides 4-32. Around each
group of ViT blocks, the ViT tokens first read from the spatial prior (injector), and
after the group the spatial prior reads back from the ViT tokens (extractor). The
spatial-prior maps, with the ViT features added back, are the four outputs.

Geometry. InternViT keeps its native 14 px patches, so its grid (H // 14, W // 14) and
the spatial prior's (ceil(H / s) for s = 8, 16, 32, from stride-2 convs with padding 1)
cover different extents of the image whenever H is not a multiple of 14 and of 32.
Rather than stretching one grid onto another, every grid here is tied to the image
by its stride: pixel k of a stride-s map covers image pixels [s*k, s*(k+1)) (the
convention of strided convs, FPNs and RoIAlign). Reference points of the deformable
attention and the resampling of ViT features onto the pyramid both come from that one
rule (:func:`centres_on`), so a ViT token and a spatial-prior pixel that look at the
same image region are matched for any input size.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmcv.cnn import build_norm_layer
from mmengine.model import BaseModule
from timm.layers import DropPath, trunc_normal_

from ..fp32_ops import Fp32MultiScaleDeformableAttention
from ..registry import DET_MODELS, ENGINE_MODELS, SEG_MODELS
from .internvit import InternViT

PYRAMID_STRIDES = (4, 8, 16, 32)


# ------------------------------------------------------------------ geometry
class Level(NamedTuple):
    """A feature map's grid: ``h`` x ``w`` pixels, pixel (i, j) covering image pixels
    [stride*i, stride*(i+1)) x [stride*j, stride*(j+1))."""
    h: int
    w: int
    stride: int

    @property
    def numel(self) -> int:
        return self.h * self.w


class DeformInputs(NamedTuple):
    """What mmcv's deformable attention needs besides query and value."""
    reference_points: torch.Tensor  # (1, num_query, num_levels, 2): (x, y) in [0, 1] of each value level
    spatial_shapes: torch.Tensor  # (num_levels, 2) long: (h, w) of each value level
    level_start_index: torch.Tensor  # (num_levels,) long: where each level starts in the flattened value


class Geometry(NamedTuple):
    """Everything that depends on the input size, computed once per forward."""
    vit: Level  # the ViT patch grid
    levels: Tuple[Level, ...]  # the spatial-prior token levels (strides 8, 16, 32)
    inject: DeformInputs  # ViT tokens -> spatial-prior levels
    extract: DeformInputs  # spatial-prior tokens -> the ViT grid


def centres_on(query: Level, value: Level, device=None) -> torch.Tensor:
    """Centres of ``query``'s pixels in ``value``'s normalised coordinates, (h*w, 2) as (x, y).

    0 and 1 are the edges of the image region ``value`` covers, as in ``grid_sample``
    with ``align_corners=False`` (mmcv's sampling convention), so a centre that lies
    past ``value``'s last pixel (e.g. image pixels beyond the ViT's last whole patch) is > 1.
    """
    ys = (torch.arange(query.h, device=device, dtype=torch.float32) + 0.5) * query.stride / (value.stride * value.h)
    xs = (torch.arange(query.w, device=device, dtype=torch.float32) + 0.5) * query.stride / (value.stride * value.w)
    y, x = torch.meshgrid(ys, xs, indexing='ij')
    return torch.stack([x.flatten(), y.flatten()], dim=-1)


def deform_inputs(queries: Sequence[Level], values: Sequence[Level], device=None) -> DeformInputs:
    """Reference points of all ``queries`` pixels (levels concatenated) on each of ``values``.

    Each value level gets its own reference point: mmcv normalises coordinates per level,
    and levels of different strides cover different image extents.
    """
    ref = torch.cat([torch.stack([centres_on(q, v, device) for v in values], dim=1) for q in queries])
    shapes = torch.tensor([[v.h, v.w] for v in values], dtype=torch.long, device=device)
    starts = torch.tensor([0] + [v.numel for v in values[:-1]], dtype=torch.long, device=device).cumsum(0)
    return DeformInputs(ref[None], shapes, starts)


def in_dtype_of(inputs: DeformInputs, tokens: torch.Tensor) -> dict:
    """``inputs`` as mmcv's keyword arguments, reference points in the tokens' dtype.

    A model cast to bf16/fp16 (DeepSpeed, ``model.half()``) has half-precision sampling
    offsets but float32 reference points; their sum stays float32 and mmcv's CPU path
    then hands ``grid_sample`` a float32 grid for a half-precision value, which it
    refuses. (A bf16 sampling runs in fp32 anyway: models/fp32_ops.py.)
    Under autocast the tokens are float32 and nothing changes.
    """
    return inputs._replace(reference_points=inputs.reference_points.to(tokens.dtype))._asdict()


def resample(feat: torch.Tensor, src: Level, dst: Level) -> torch.Tensor:
    """``feat`` (B, C, src.h, src.w) bilinearly sampled at the centres of ``dst``'s pixels."""
    grid = centres_on(dst, src, feat.device).to(feat.dtype).view(1, dst.h, dst.w, 2) * 2 - 1
    # 'border': pyramid pixels beyond the ViT's last whole patch take the nearest token's features
    return F.grid_sample(feat, grid.expand(feat.shape[0], -1, -1, -1), mode='bilinear', padding_mode='border',
                         align_corners=False)


def tokens_to_maps(tokens: torch.Tensor, levels: Sequence[Level]) -> List[torch.Tensor]:
    """(B, sum h*w, C) -> one (B, C, h, w) map per level."""
    B, _, C = tokens.shape
    parts = tokens.split([lv.numel for lv in levels], dim=1)
    return [p.transpose(1, 2).reshape(B, C, lv.h, lv.w) for p, lv in zip(parts, levels)]


def maybe_checkpoint(enabled: bool, fn: Callable, *args):
    if enabled and torch.is_grad_enabled():
        return cp.checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)


# ------------------------------------------------------------------ modules
def deformable_attention(dims: int, num_heads: int, num_levels: int, num_points: int,
                         ratio: float) -> Fp32MultiScaleDeformableAttention:
    # mmcv's module: its compiled kernel on CUDA, its PyTorch (grid_sample) path on CPU; the sampling in fp32
    # for bf16 inputs (mmcv's CUDA kernel has no bf16; fp32_ops.py).
    # dropout=0: mmcv's default of 0.1 would drop the attention output, which the adapter never does.
    return Fp32MultiScaleDeformableAttention(embed_dims=dims, num_heads=num_heads, num_levels=num_levels,
                                             num_points=num_points, dropout=0.0, batch_first=True,
                                             value_proj_ratio=ratio)


def conv_bn_relu(in_channels: int, out_channels: int, stride: int, norm_cfg: dict) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
                         build_norm_layer(norm_cfg, out_channels)[1], nn.ReLU(inplace=True))


class SpatialPriorModule(nn.Module):
    """A ResNet-like conv stem: the local detail a 14 px patch embedding does not keep.

    Returns maps at strides 4, 8, 16, 32 (sizes ceil(H / s), ceil(W / s)), each
    projected to the ViT width by a 1x1 conv.
    """

    def __init__(self, embed_dims: int, inplanes: int = 64, in_channels: int = 3,
                 norm_cfg: dict = dict(type='BN', requires_grad=True)):
        super().__init__()
        self.stem = nn.Sequential(conv_bn_relu(in_channels, inplanes, 2, norm_cfg),
                                  conv_bn_relu(inplanes, inplanes, 1, norm_cfg),
                                  conv_bn_relu(inplanes, inplanes, 1, norm_cfg),
                                  nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
        widths = (inplanes, 2 * inplanes, 4 * inplanes, 4 * inplanes)
        self.downs = nn.ModuleList(conv_bn_relu(widths[i], widths[i + 1], 2, norm_cfg) for i in range(3))
        self.projs = nn.ModuleList(nn.Conv2d(w, embed_dims, 1) for w in widths)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        feats = [self.stem(x)]
        for down in self.downs:
            feats.append(down(feats[-1]))
        return [proj(f) for proj, f in zip(self.projs, feats)]


class ConvFFN(nn.Module):
    """MLP on tokens with a depthwise 3x3 conv in the middle, so that each spatial-prior
    token also mixes with its neighbours on its own level (one kernel shared by the levels)."""

    def __init__(self, dims: int, hidden_dims: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dims, hidden_dims)
        self.dwconv = nn.Conv2d(hidden_dims, hidden_dims, 3, 1, 1, groups=hidden_dims)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dims, dims)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, levels: Sequence[Level]) -> torch.Tensor:
        maps = tokens_to_maps(self.fc1(x), levels)
        x = torch.cat([self.dwconv(m).flatten(2).transpose(1, 2) for m in maps], dim=1)
        return self.drop(self.fc2(self.drop(self.act(x))))


class Injector(nn.Module):
    """ViT tokens read the spatial prior: ``x + gamma * attn(norm(x), norm(c))``.

    gamma starts at 0, so at the start of training the ViT blocks see exactly the
    tokens they were pre-trained on.
    """

    def __init__(self, dims: int, num_heads: int, num_points: int, num_levels: int, deform_ratio: float,
                 init_gamma: float = 0.0):
        super().__init__()
        self.query_norm = nn.LayerNorm(dims, eps=1e-6)
        self.feat_norm = nn.LayerNorm(dims, eps=1e-6)
        self.attn = deformable_attention(dims, num_heads, num_levels, num_points, deform_ratio)
        self.gamma = nn.Parameter(torch.full((dims,), float(init_gamma)))

    def forward(self, x: torch.Tensor, c: torch.Tensor, inputs: DeformInputs) -> torch.Tensor:
        # mmcv returns `attention + identity`. The residual here must be scaled by gamma first,
        # so identity is a 0-d zero and mmcv hands back the bare attention (exactly: a + 0 == a).
        # identity=x would add x unscaled; subtracting x afterwards would not be exact.
        attn = self.attn(query=self.query_norm(x), value=self.feat_norm(c), identity=x.new_zeros(()),
                         **in_dtype_of(inputs, x))
        return x + self.gamma * attn


class Extractor(nn.Module):
    """Spatial-prior tokens read the ViT tokens: ``c + attn(norm(c), norm(x))``, then
    ``c + ConvFFN(norm(c))``."""

    def __init__(self, dims: int, num_heads: int, num_points: int, deform_ratio: float, cffn_ratio: float,
                 drop_path: float = 0.0):
        super().__init__()
        self.query_norm = nn.LayerNorm(dims, eps=1e-6)
        self.feat_norm = nn.LayerNorm(dims, eps=1e-6)
        self.attn = deformable_attention(dims, num_heads, 1, num_points, deform_ratio)
        self.ffn_norm = nn.LayerNorm(dims, eps=1e-6)
        self.ffn = ConvFFN(dims, int(dims * cffn_ratio))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, c: torch.Tensor, x: torch.Tensor, inputs: DeformInputs,
                levels: Sequence[Level]) -> torch.Tensor:
        # identity=c: mmcv's own residual (attention + identity, no dropout) is exactly this one.
        c = self.attn(query=self.query_norm(c), value=self.feat_norm(x), identity=c, **in_dtype_of(inputs, c))
        return c + self.drop_path(self.ffn(self.ffn_norm(c), levels))


class InteractionBlock(nn.Module):
    """Inject into the ViT tokens, run a group of ViT blocks, extract into the spatial prior.

    The ViT blocks are not owned here (they stay at ``vit.blocks.*`` for checkpoint
    loading); the adapter passes a function that runs the group. The cls token goes
    through the blocks but not through the injector / extractors.
    """

    def __init__(self, dims: int, num_heads: int, num_points: int, deform_ratio: float, cffn_ratio: float,
                 drop_path: float = 0.0, extra_extractors: int = 0, with_cp: bool = False, inject: bool = True):
        super().__init__()
        self.with_cp = with_cp
        # inject=False: no injector, the ViT blocks see their own tokens only (InternViTAdapter's `inject`)
        self.injector = Injector(dims, num_heads, num_points, 3, deform_ratio) if inject else None
        self.extractor = Extractor(dims, num_heads, num_points, deform_ratio, cffn_ratio, drop_path)
        self.extra_extractors = nn.ModuleList(
            Extractor(dims, num_heads, num_points, deform_ratio, cffn_ratio, drop_path)
            for _ in range(extra_extractors))

    def forward(self, x: torch.Tensor, cls: torch.Tensor, c: torch.Tensor,
                run_blocks: Callable[[torch.Tensor], torch.Tensor],
                geo: Geometry) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        use_cp = self.with_cp and self.training
        if self.injector is not None:
            x = maybe_checkpoint(use_cp, self.injector, x, c, geo.inject)
        tokens = run_blocks(torch.cat([cls, x], dim=1))
        cls, x = tokens[:, :1], tokens[:, 1:]
        for extractor in (self.extractor, *self.extra_extractors):
            c = maybe_checkpoint(use_cp, extractor, c, x, geo.extract, geo.levels)
        return x, cls, c


# ------------------------------------------------------------------ backbone
def default_interaction_indexes(depth: int, groups: int = 4) -> List[List[int]]:
    """``depth`` blocks in ``groups`` near-equal runs: 48 -> [[0,11],[12,23],[24,35],[36,47]],
    45 -> [[0,11],[12,22],[23,33],[34,44]] (the ends are the head-tuning recipes' out_indices)."""
    ends = [math.ceil((k + 1) * depth / groups) - 1 for k in range(groups)]
    return [[start, end] for start, end in zip([0] + [e + 1 for e in ends[:-1]], ends)]


def check_interaction_indexes(indexes: Sequence[Sequence[int]], depth: int) -> List[Tuple[int, int]]:
    groups = [tuple(int(i) for i in g) for g in indexes]
    if len(groups) != len(PYRAMID_STRIDES):
        raise ValueError(f'ViT-Adapter needs {len(PYRAMID_STRIDES)} interaction groups (one per output scale), '
                         f'got {len(groups)}')
    expected_start = 0
    for g in groups:
        if len(g) != 2 or g[0] != expected_start or g[1] < g[0]:
            raise ValueError(f'interaction_indexes {list(map(list, groups))} must split the {depth} ViT blocks '
                             f'into consecutive [start, end] runs from block 0, e.g. '
                             f'{default_interaction_indexes(depth)}')
        expected_start = g[1] + 1
    if expected_start != depth:
        raise ValueError(f'interaction_indexes {list(map(list, groups))} end at block {expected_start - 1}, but the '
                         f'ViT has {depth} blocks; e.g. {default_interaction_indexes(depth)}')
    return groups


@ENGINE_MODELS.register_module()
@SEG_MODELS.register_module()
@DET_MODELS.register_module()
class InternViTAdapter(BaseModule):
    """InternViT with a ViT-Adapter: four feature maps at strides 4, 8, 16, 32.

    ``forward(images (B, 3, H, W))`` returns maps (B, C, ceil(H/s), ceil(W/s)) for
    s = 4, 8, 16, 32 (the sizes the spatial prior's stride-2 convs give; C is the ViT
    width). Any H, W >= 14 works: InternViT runs at its native 14 px patches.

    Args:
        vit: keyword arguments of :class:`InternViT` (``arch``, ``img_size``, ``frozen``,
            ``drop_path_rate``, ``init_cfg`` ...). The ViT is ``self.vit``, so its
            parameters are ``backbone.vit.*`` in a segmentor and its own ``init_cfg``
            loads the pretrained weights when the segmentor calls ``init_weights``.
        interaction_indexes: [start, end] block runs, one per interaction (4, covering all
            blocks); default: near-equal quarters.
        num_heads: heads of the deformable attention (default: the ViT's).
        n_points: sampling points per head and level.
        deform_ratio: width of the deformable attention's values relative to the ViT's.
        cffn_ratio: hidden width of the extractors' ConvFFN relative to the ViT's.
        extra_extractors: extractors added to the last interaction.
        conv_inplanes: width of the spatial prior's stem.
        drop_path_rate: drop path of the extractors' ConvFFN.
        norm_cfg: norm of the spatial prior and of the four outputs.
        with_cp: activation checkpointing of every ViT block and every injector / extractor.
            The ViT's own ``with_cp`` turns it on too; the ViT's ``run_blocks`` checkpoints its blocks.
        inject: False builds no injectors: the ViT blocks only ever see their own tokens, and the
            adapter reads their outputs (extractors, output maps) without writing back. With a frozen
            ViT nothing then needs a gradient through it, so its blocks run without an autograd graph
            (no_grad, in the ViT's dtype, e.g. bf16) and only the spatial prior, the extractors and the
            heads keep activations for backward: DINOv3's design for its frozen 7B segmentation adapter.

    Frozen ViT (``vit=dict(frozen=True)``): its parameters have ``requires_grad=False``
    and it stays in eval mode, but its blocks still run *with* autograd while the adapter
    trains: the injectors add to the tokens before each group of blocks, so their
    gradients have to flow back through the frozen blocks. Only the patch and position
    embedding run without a graph. This is InternVL's frozen-ViT adapter recipe; with
    a 6B ViT it costs backward memory, which ``with_cp`` keeps down. ``inject=False``
    removes that cost altogether (see above).
    """

    def __init__(self,
                 vit: dict,
                 interaction_indexes: Optional[Sequence[Sequence[int]]] = None,
                 num_heads: Optional[int] = None,
                 n_points: int = 4,
                 deform_ratio: float = 0.5,
                 cffn_ratio: float = 0.25,
                 extra_extractors: int = 2,
                 conv_inplanes: int = 64,
                 drop_path_rate: float = 0.0,
                 norm_cfg: dict = dict(type='BN', requires_grad=True),
                 with_cp: bool = False,
                 inject: bool = True,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        vit = dict(vit)
        vit_type = vit.pop('type', 'InternViT')
        if vit_type not in ('InternViT', InternViT):
            raise TypeError(f'InternViTAdapter wraps an InternViT, got vit type {vit_type!r}')
        self.vit = InternViT(**vit)
        self.embed_dims = dims = self.vit.embed_dims
        self.depth = self.vit.depth  # read by the layer-decay optimizer constructor
        self.interaction_indexes = check_interaction_indexes(
            interaction_indexes or default_interaction_indexes(self.depth), self.depth)
        self.num_heads = num_heads or self.vit.num_heads
        if int(dims * deform_ratio) % self.num_heads:
            raise ValueError(f'the deformable attention value width {int(dims * deform_ratio)} (embed_dims '
                             f'{dims} x deform_ratio {deform_ratio}) is not divisible by num_heads {self.num_heads}')
        self.with_cp = self.vit.with_cp = with_cp or self.vit.with_cp  # the ViT checkpoints its own blocks
        self.inject = inject

        self.spm = SpatialPriorModule(dims, conv_inplanes, self.vit.patch_embed.proj.in_channels, norm_cfg)
        self.level_embed = nn.Parameter(torch.zeros(3, dims))  # tells the strides 8/16/32 tokens apart
        last = len(self.interaction_indexes) - 1
        self.interactions = nn.ModuleList(
            InteractionBlock(dims, self.num_heads, n_points, deform_ratio, cffn_ratio, drop_path_rate,
                             extra_extractors=extra_extractors if i == last else 0, with_cp=self.with_cp,
                             inject=inject)
            for i in range(len(self.interaction_indexes)))
        self.up = nn.ConvTranspose2d(dims, dims, 2, 2)  # stride 8 -> 4, refined with the stem's stride-4 map
        self.norms = nn.ModuleList(build_norm_layer(norm_cfg, dims)[1] for _ in PYRAMID_STRIDES)
        if not self.level_embed.is_meta:
            self._init_adapter_weights()

    @property
    def frozen(self) -> bool:
        return self.vit.frozen

    def _init_adapter_weights(self):
        """Random init of the adapter's own parts (the ViT has its own and its init_cfg)."""
        def init(m: nn.Module):
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

        for part in (self.spm, self.interactions, self.up):
            part.apply(init)
        # after the generic Linear init: mmcv's own (offsets spread around each reference point,
        # uniform attention weights) is what makes deformable attention start sensibly
        for m in self.interactions.modules():
            if isinstance(m, Fp32MultiScaleDeformableAttention):
                m.init_weights()
        nn.init.normal_(self.level_embed)

    # --------------------------------------------------------------- forward
    def get_layer_depth(self, param_name: str, prefix: str = '') -> Tuple[int, int]:
        """The ViT's layers for ``vit.*``; the adapter's own parts learn with the neck and heads."""
        if param_name.startswith(prefix + 'vit.'):
            return self.vit.get_layer_depth(param_name, prefix + 'vit.')
        return self.vit.depth + 1, self.vit.depth + 2

    def geometry(self, spm_maps: Sequence[torch.Tensor], grid: Tuple[int, int]) -> Geometry:
        vit = Level(grid[0], grid[1], self.vit.patch_size)
        levels = tuple(Level(m.shape[-2], m.shape[-1], s) for m, s in zip(spm_maps[1:], PYRAMID_STRIDES[1:]))
        device = spm_maps[0].device
        return Geometry(vit, levels, inject=deform_inputs([vit], levels, device),
                        extract=deform_inputs(levels, [vit], device))

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        c1, *prior = self.spm(images)
        # The ViT sees the whole 14 px patches only (timm's patch embedding refuses a remainder); the
        # pixels past them are covered by the spatial prior, and the geometry accounts for both.
        patch = self.vit.patch_size
        vit_images = images[..., :images.shape[-2] // patch * patch, :images.shape[-1] // patch * patch]
        tokens, grid = self.vit.prepare_tokens(vit_images)
        tokens = tokens.to(images.dtype)  # the adapter's dtype; a bf16 ViT computes its blocks in bf16
        geo = self.geometry([c1, *prior], grid)
        c = torch.cat([m.flatten(2).transpose(1, 2) + e for m, e in zip(prior, self.level_embed)], dim=1)

        cls, x = tokens[:, :1], tokens[:, 1:]
        vit_feats = []
        for interaction, (start, end) in zip(self.interactions, self.interaction_indexes):
            run_group = partial(self.vit.run_blocks, grid=grid, start=start, end=end + 1)
            x, cls, c = interaction(x, cls, c, run_group, geo)
            vit_feats.append(x)

        c2, c3, c4 = tokens_to_maps(c, geo.levels)
        # 2 * ceil(H/8) may exceed ceil(H/4) by one: the extra row/column lies past the stride-4 map
        c1 = c1 + self.up(c2)[..., :c1.shape[-2], :c1.shape[-1]]
        outs = []
        for feat, vit_tokens, stride, norm in zip((c1, c2, c3, c4), vit_feats, PYRAMID_STRIDES, self.norms):
            vit_map = tokens_to_maps(vit_tokens, [geo.vit])[0]
            feat = feat + resample(vit_map, geo.vit, Level(feat.shape[-2], feat.shape[-1], stride))
            outs.append(norm(feat))
        return tuple(outs)
