"""mmcv's deformable attention, RoIAlign and NMS run in fp32 when their inputs are bf16 (issue 19).

mmcv's CUDA kernels have no bf16 and cannot run here: spies on the ops mmcv dispatches to (its PyTorch
path and CPU kernels, which the wrappers reach the same way) check that they receive fp32, and the
results are compared with an fp32 run. Tolerance: none beyond bf16 rounding. The op computes in fp32 on
the bf16 values made exact in fp32, so its output and gradients must equal the fp32 run's on those
values, rounded to bf16, bit for bit.
"""
import importlib

import pytest
import torch
from mmcv.ops import batched_nms
from mmcv.ops import multi_scale_deform_attn as msda
from mmengine.registry import init_default_scope

import internvit_dense.models  # noqa: F401  (registers Fp32RoIAlign and fp32_nms where mmdet/mmcv look)
from internvit_dense.models import fp32_ops
from internvit_dense.models.backbones import InternViTAdapter

BF16 = torch.bfloat16
roi_align_module = importlib.import_module('mmcv.ops.roi_align')


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def spy(monkeypatch, module, name):
    """Replaces ``module.name`` by a wrapper that records its tensor arguments' dtypes."""
    seen, real = [], getattr(module, name)

    def wrapper(*args, **kwargs):
        seen.append([a.dtype for a in args if torch.is_tensor(a) and a.is_floating_point()])
        return real(*args, **kwargs)
    monkeypatch.setattr(module, name, wrapper)
    return seen


def msda_inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = torch.tensor([[6, 8], [3, 4]])
    starts = torch.tensor([0, 48])
    value = torch.randn(2, 60, 2, 8, generator=g)
    locations = torch.rand(2, 10, 2, 2, 4, 2, generator=g) * 1.2 - 0.1  # a few off the map
    weights = torch.rand(2, 10, 2, 2, 4, generator=g).softmax(-1)
    return [t.to(BF16) for t in (value, locations, weights)], shapes, starts


def test_deformable_attention_gets_fp32_and_returns_the_rounded_fp32_result(monkeypatch):
    seen = spy(monkeypatch, msda, 'multi_scale_deformable_attn_pytorch')  # the CPU path; CUDA: the gpu check
    (value, locations, weights), shapes, starts = msda_inputs()
    bf16 = [t.clone().requires_grad_() for t in (value, locations, weights)]
    out = fp32_ops.multi_scale_deformable_attn(bf16[0], shapes, starts, bf16[1], bf16[2])
    assert seen == [[torch.float32] * 3] and out.dtype == BF16
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(BF16)
    out.backward(upstream)

    fp32 = [t.float().requires_grad_() for t in (value, locations, weights)]  # the same values, exact in fp32
    ref = msda.multi_scale_deformable_attn_pytorch(fp32[0], shapes, fp32[1], fp32[2])
    ref.backward(upstream.float())
    assert torch.equal(out, ref.to(BF16))
    for got, want in zip(bf16, fp32):
        assert got.grad.dtype == BF16 and torch.equal(got.grad, want.grad.to(BF16))


def test_other_dtypes_run_as_they_are(monkeypatch):
    seen = spy(monkeypatch, msda, 'multi_scale_deformable_attn_pytorch')
    (value, locations, weights), shapes, starts = msda_inputs()
    out = fp32_ops.multi_scale_deformable_attn(value.float(), shapes, starts, locations.float(), weights.float())
    assert seen == [[torch.float32] * 3] and out.dtype == torch.float32
    calls = []
    assert fp32_ops.run_in_fp32(lambda *a: calls.append([t.dtype for t in a]) or a[0], value.half(), value.half()) \
        .dtype == torch.float16 and calls == [[torch.float16] * 2]


def test_adapter_under_bf16_autocast_samples_in_fp32_and_matches_fp32(monkeypatch):
    """--amp bf16 on the ViT-Adapter: the projections in bf16, every deformable sampling in fp32."""
    seen = spy(monkeypatch, msda, 'multi_scale_deformable_attn_pytorch')
    torch.manual_seed(0)
    model = InternViTAdapter(vit=dict(arch=dict(embed_dims=32, depth=4, num_heads=2, mlp_dims=64), img_size=56,
                                      pretrain_size=56), num_heads=2, conv_inplanes=8).train()
    with torch.no_grad():
        for interaction in model.interactions:
            interaction.injector.gamma.fill_(0.5)
    images = torch.randn(2, 3, 70, 84)
    reference = model(images)
    seen.clear()
    with torch.autocast('cpu', dtype=BF16):
        outs = model(images)
    attentions = [m for m in model.modules() if isinstance(m, fp32_ops.Fp32MultiScaleDeformableAttention)]
    assert len(seen) == len(attentions) and all(dtypes == [torch.float32] * 3 for dtypes in seen)
    for got, want in zip(outs, reference):
        assert (got.float() - want).norm() / want.norm() < 0.05  # bf16 matmuls through the blocks
    sum(o.float().sum() for o in outs).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for n, p in model.named_parameters()
               if n.startswith('interactions.0.extractor.attn.'))


def rois_and_features(seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(2, 4, 12, 16, generator=g).to(BF16)
    xy = torch.randint(0, 80, (16, 2), generator=g).float()
    rois = torch.cat([torch.randint(0, 2, (16, 1), generator=g).float(), xy, xy + 24], 1).to(BF16)
    return feats, rois


def test_roi_align_gets_fp32_and_returns_the_rounded_fp32_result(monkeypatch):
    seen = spy(monkeypatch, roi_align_module, 'roi_align')
    feats, rois = rois_and_features()
    layer = fp32_ops.Fp32RoIAlign(output_size=7, spatial_scale=1 / 8, sampling_ratio=2)
    bf16 = feats.clone().requires_grad_()
    out = layer(bf16, rois)
    assert seen == [[torch.float32, torch.float32]] and out.dtype == BF16
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(BF16)
    out.backward(upstream)
    fp32 = feats.float().requires_grad_()
    ref = roi_align_module.RoIAlign(7, 1 / 8, 2)(fp32, rois.float())
    ref.backward(upstream.float())
    assert torch.equal(out, ref.to(BF16))
    assert torch.equal(bf16.grad, fp32.grad.to(BF16))


def test_detector_configs_name_the_fp32_roi_align_and_nms():
    """mmdet finds 'Fp32RoIAlign' (getattr(mmcv.ops, type)) and mmcv's batched_nms finds 'fp32_nms' (eval in
    mmcv/ops/nms.py): the names the detector configs use."""
    from mmengine.config import Config

    from mmdet.registry import MODELS
    init_default_scope('mmdet')
    cfg = Config.fromfile('configs/_base_/models/internvit_mask-rcnn_fpn.py')
    extractor = MODELS.build(cfg.model.roi_head.bbox_roi_extractor)
    assert all(type(layer) is fp32_ops.Fp32RoIAlign for layer in extractor.roi_layers)
    assert cfg.model.train_cfg.rpn_proposal.nms.type == cfg.model.test_cfg.rcnn.nms.type == 'fp32_nms'


def test_nms_on_bf16_boxes():
    g = torch.Generator().manual_seed(0)
    xy = torch.randint(0, 100, (60, 2), generator=g).float()
    boxes = torch.cat([xy, xy + torch.randint(8, 40, (60, 2), generator=g)], 1).to(BF16)  # integers: exact in bf16
    scores = (torch.randperm(200, generator=g)[:60].float() / 256).to(BF16)
    ids = torch.randint(0, 3, (60,), generator=g)
    with pytest.raises(RuntimeError, match='expected scalar type Float but found BFloat16'):
        batched_nms(boxes, scores, ids, dict(type='nms', iou_threshold=0.5))  # why fp32_nms exists
    dets, keep = batched_nms(boxes, scores, ids, dict(type='fp32_nms', iou_threshold=0.5))
    ref_dets, ref_keep = batched_nms(boxes.float(), scores.float(), ids, dict(type='nms', iou_threshold=0.5))
    assert torch.equal(keep, ref_keep) and dets.dtype == BF16 and torch.equal(dets, ref_dets.to(BF16))
