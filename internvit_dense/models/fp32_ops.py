"""mmcv's compiled ops run in fp32 whenever their inputs are bf16, on every device.

mmcv 2.1.0's CUDA kernels for multi-scale deformable attention (``ms_deform_attn_cuda.cu``) and RoIAlign
(``roi_align_cuda.cu``) dispatch float, double and half only (``AT_DISPATCH_FLOATING_TYPES_AND_HALF``):
with bf16 inputs (DeepSpeed bf16, ``--amp`` in bf16, a bf16 adapter) they stop with ``"..." not implemented
for 'BFloat16'``. On a CPU mmcv takes other paths (``grid_sample``, a CPU kernel), so a bf16 run there
passes and the GPU run does not. Here bf16 inputs are cast to fp32, the op runs with autocast off, and
the output is cast back to bf16, on the CPU as on the GPU, so that both take the same path.

- :func:`run_in_fp32`: the one helper every op below goes through (and a Mask2Former pixel decoder can).
- :func:`multi_scale_deformable_attn`: mmcv's kernel (CUDA) or its PyTorch path (elsewhere), in fp32.
- :class:`Fp32MultiScaleDeformableAttention`: mmcv's module with that kernel call (the ViT-Adapter's).
- :class:`Fp32MSDeformAttnPixelDecoder`: mmdet's Mask2Former pixel decoder with that module in its encoder;
  Mask2Former configs name it as ``pixel_decoder=dict(type='Fp32MSDeformAttnPixelDecoder', ...)``.
- :class:`Fp32RoIAlign`: mmcv's ``RoIAlign`` in fp32; detector configs name it as
  ``roi_layer=dict(type='Fp32RoIAlign', ...)``.
- :func:`fp32_nms`: mmcv's ``nms`` in fp32 (its kernels read boxes as float, on the CPU too); detector configs
  name it as ``nms=dict(type='fp32_nms', ...)``.
"""
from __future__ import annotations

import importlib
from typing import Callable, Optional

import torch
from mmcv import ops as mmcv_ops
from mmcv.ops import MultiScaleDeformableAttention, RoIAlign
from mmcv.ops import multi_scale_deform_attn as msda
from mmdet.models.layers import MSDeformAttnPixelDecoder

from .registry import DET_MODELS, ENGINE_MODELS, SEG_MODELS


def run_in_fp32(op: Callable, *args, **kwargs):
    """``op(*args, **kwargs)``; if any tensor argument is bf16, every floating tensor argument is cast to fp32,
    the op runs with autocast off, and floating outputs (a tensor or a tuple's) come back in bf16. Other calls
    run as they are."""
    tensors = [a for a in args if torch.is_tensor(a)]
    if not any(t.dtype == torch.bfloat16 for t in tensors):
        return op(*args, **kwargs)
    args = tuple(a.float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args)
    with torch.autocast(tensors[0].device.type, enabled=False):
        out = op(*args, **kwargs)
    back = lambda t: t.to(torch.bfloat16) if torch.is_tensor(t) and t.is_floating_point() else t  # noqa: E731
    return tuple(back(t) for t in out) if isinstance(out, tuple) else back(out)


def _ms_deform_attn(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, im2col_step):
    # mmcv's own dispatch (MultiScaleDeformableAttention.forward): the compiled kernel on CUDA, else grid_sample.
    # Looked up in mmcv's module at each call, so that the memory plan's stand-ins (memory_plan/trace.py) apply.
    if value.is_cuda:
        return msda.MultiScaleDeformableAttnFunction.apply(value, spatial_shapes, level_start_index,
                                                           sampling_locations, attention_weights, im2col_step)
    return msda.multi_scale_deformable_attn_pytorch(value, spatial_shapes, sampling_locations, attention_weights)


def multi_scale_deformable_attn(value: torch.Tensor, spatial_shapes: torch.Tensor, level_start_index: torch.Tensor,
                                sampling_locations: torch.Tensor, attention_weights: torch.Tensor,
                                im2col_step: int = 64) -> torch.Tensor:
    """mmcv's multi-scale deformable attention, (bs, num_query, heads * head_dims), in fp32 for bf16 inputs."""
    return run_in_fp32(_ms_deform_attn, value, spatial_shapes, level_start_index, sampling_locations,
                       attention_weights, im2col_step)


@ENGINE_MODELS.register_module()
@SEG_MODELS.register_module()
@DET_MODELS.register_module()
class Fp32MultiScaleDeformableAttention(MultiScaleDeformableAttention):
    """mmcv's ``MultiScaleDeformableAttention`` (same parameters, same checkpoint keys) whose sampling runs
    through :func:`multi_scale_deformable_attn`: the projections compute in the inputs' dtype, the
    sampling in fp32 when they are bf16.

    The forward is mmcv 2.1.0's, restated: mmcv calls its kernel by name inside it, and the cast has to sit
    between the projections and that call. It takes what mmcv's takes (``key_padding_mask``, 2-d points as the
    ViT-Adapter passes, 4-d boxes); one difference: no assertion on ``spatial_shapes``' values, which would
    read them back from the GPU at every call.
    """

    def forward(self, query: torch.Tensor, key: Optional[torch.Tensor] = None, value: Optional[torch.Tensor] = None,
                identity: Optional[torch.Tensor] = None, query_pos: Optional[torch.Tensor] = None,
                key_padding_mask: Optional[torch.Tensor] = None, reference_points: Optional[torch.Tensor] = None,
                spatial_shapes: Optional[torch.Tensor] = None, level_start_index: Optional[torch.Tensor] = None,
                **kwargs) -> torch.Tensor:
        if reference_points is None or reference_points.shape[-1] not in (2, 4):
            raise ValueError('Fp32MultiScaleDeformableAttention takes reference points of 2 (x, y) or 4 (boxes) values')
        value = query if value is None else value
        identity = query if identity is None else identity
        if query_pos is not None:
            query = query + query_pos
        if not self.batch_first:
            query, value = query.permute(1, 0, 2), value.permute(1, 0, 2)
        bs, num_query, _ = query.shape
        num_value = value.shape[1]
        value = self.value_proj(value)
        if key_padding_mask is not None:
            value = value.masked_fill(key_padding_mask[..., None], 0.0)
        value = value.view(bs, num_value, self.num_heads, -1)
        offsets = self.sampling_offsets(query).view(bs, num_query, self.num_heads, self.num_levels,
                                                    self.num_points, 2)
        weights = self.attention_weights(query).view(bs, num_query, self.num_heads,
                                                     self.num_levels * self.num_points).softmax(-1)
        weights = weights.view(bs, num_query, self.num_heads, self.num_levels, self.num_points)
        if reference_points.shape[-1] == 2:
            normalizer = torch.stack([spatial_shapes[..., 1], spatial_shapes[..., 0]], -1)
            locations = reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
        else:  # boxes (cx, cy, w, h): offsets scaled by half the box size per point, as mmcv's
            locations = (reference_points[:, :, None, :, None, :2]
                         + offsets / self.num_points * reference_points[:, :, None, :, None, 2:] * 0.5)
        output = multi_scale_deformable_attn(value, spatial_shapes, level_start_index, locations, weights,
                                             self.im2col_step)
        output = self.output_proj(output.to(value.dtype))
        if not self.batch_first:
            output = output.permute(1, 0, 2)
        return self.dropout(output) + identity


def encoding_in_dtype_of(encoding: torch.nn.Module, weight: Callable[[], torch.Tensor]) -> None:
    """Casts what ``encoding`` (mmdet's ``SinePositionalEncoding``: no weights, always fp32) returns to the dtype of
    ``weight()``, looked up at each call. A model cast whole to bf16 (DeepSpeed bf16) otherwise adds the fp32
    encoding to bf16 features and feeds the fp32 sum to a bf16 ``Linear``; fp32 weights (autocast) keep fp32."""
    encoding.register_forward_hook(lambda module, args, out: out.to(weight().dtype))


@SEG_MODELS.register_module()
@DET_MODELS.register_module()
class Fp32MSDeformAttnPixelDecoder(MSDeformAttnPixelDecoder):
    """mmdet's Mask2Former pixel decoder (same config keys, same checkpoint keys) whose deformable attention
    samples in fp32 when its inputs are bf16 (:class:`Fp32MultiScaleDeformableAttention`), and whose position
    encoding has the dtype of its weights (:func:`encoding_in_dtype_of`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        encoding_in_dtype_of(self.postional_encoding, lambda: self.level_encoding.weight)  # (mmdet's spelling)
        # mmdet's encoder layer builds mmcv's class by name (no registry): the subclass, which adds no state,
        # takes its place on the built modules.
        for module in self.modules():
            if type(module) is MultiScaleDeformableAttention:
                module.__class__ = Fp32MultiScaleDeformableAttention


class Fp32RoIAlign(RoIAlign):
    """mmcv's ``RoIAlign``, run in fp32 (output back in bf16) when the features or the RoIs are bf16."""

    def forward(self, input: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        return run_in_fp32(super().forward, input, rois)


def fp32_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, offset: int = 0,
             score_threshold: float = 0, max_num: int = -1):
    """mmcv's ``nms`` (``(dets, keep)``) in fp32 for bf16 boxes or scores: its CPU and CUDA kernels read the
    boxes as float (``data_ptr<float>()``), so an RPN under bf16 autocast or DeepSpeed bf16 stops with
    "expected scalar type Float but found BFloat16". Detector configs name it ``nms=dict(type='fp32_nms', ...)``."""
    return run_in_fp32(mmcv_ops.nms, boxes, scores, iou_threshold, offset, score_threshold, max_num)


# mmcv's batched_nms (mmdet's RPN and bbox heads) resolves an nms type string with eval() in mmcv/ops/nms.py,
# not through a registry: this is where a detector config's ``nms=dict(type='fp32_nms', ...)`` is found.
importlib.import_module('mmcv.ops.nms').fp32_nms = fp32_nms
# mmdet's BaseRoIExtractor.build_roi_layers resolves a roi_layer type string with getattr(mmcv.ops, type), not
# through a registry: this is where a detector config's ``type='Fp32RoIAlign'`` is found.
mmcv_ops.Fp32RoIAlign = Fp32RoIAlign
