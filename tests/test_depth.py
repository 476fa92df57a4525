"""Depth estimation: the heads, the metric against a hand computation, mmseg's three depth traps, the configs.

Small tensors and the tiny backbone only; the one synthetic set of this module is 6 images.
"""
import os

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.structures import PixelData
from mmseg.structures import SegDataSample

import internvit_dense.datasets  # noqa: F401  (registers the depth transforms and metric)
from internvit_dense.datasets.depth import CheckedDepthMetric, eval_crop_mask
from internvit_dense.models.depth import BNBinsDepthHead, DPTDepthHead, GradientMatchingLoss, ViTDepthEstimator
from internvit_dense.models.registry import SEG_MODELS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_LINEAR = os.path.join(ROOT, 'configs/depth/tiny/tiny_linear_synthetic.py')
TINY_DPT = os.path.join(ROOT, 'configs/depth/tiny/tiny_dpt_synthetic.py')
METRICS = ('d1', 'd2', 'd3', 'abs_rel', 'sq_rel', 'rmse', 'rmse_log', 'log10', 'silog')


def build(model_cfg):
    from mmengine.registry import init_default_scope
    init_default_scope('mmseg')  # as the configs' default_scope: SegDataPreProcessor ... are mmseg's
    return SEG_MODELS.build(model_cfg)


def tiny_model(config=TINY_LINEAR, **test_cfg):
    cfg = Config.fromfile(config)
    if test_cfg:
        cfg.model.test_cfg = test_cfg
    return build(cfg.model).eval()


def sample(gt: torch.Tensor, **meta) -> SegDataSample:
    s = SegDataSample(metainfo=dict(dict(img_shape=tuple(gt.shape[-2:]), ori_shape=tuple(gt.shape[-2:])), **meta))
    s.gt_depth_map = PixelData(data=gt[None] if gt.ndim == 2 else gt)
    return s


# ------------------------------------------------------------------- the linear head


def test_bins_head_is_dinov2s_recipe():
    """[patch, cls] of each block concatenated, x4 upsampling, 256 UD bins, linear normalisation: by hand."""
    torch.manual_seed(0)
    head = BNBinsDepthHead(in_channels=8, in_index=[0, 1], min_depth=0.001, max_depth=10.0,
                           loss_decode=dict(type='SiLogLoss')).eval()
    with torch.no_grad():
        head.bn.running_mean.normal_()
        head.bn.running_var.uniform_(0.5, 2)
        head.conv_depth.weight.normal_()
    feats = [(torch.randn(2, 8, 3, 4), torch.randn(2, 8)) for _ in range(2)]
    depth = head(feats)
    assert depth.shape == (2, 1, 12, 16)

    maps = [torch.cat([x, c[:, :, None, None].expand_as(x)], 1) for x, c in feats]
    x = torch.cat([torch.nn.functional.interpolate(m, size=(12, 16), mode='bilinear', align_corners=False)
                   for m in maps], 1)
    x = (x - head.bn.running_mean[:, None, None]) / torch.sqrt(head.bn.running_var[:, None, None] + head.bn.eps)
    logits = torch.einsum('bchw,kc->bkhw', x, head.conv_depth.weight[:, :, 0, 0]) + head.conv_depth.bias[:, None, None]
    p = logits.relu() + 0.1
    p = p / p.sum(1, keepdim=True)
    bins = torch.linspace(0.001, 10.0, 256)
    assert torch.allclose(depth[:, 0], (p * bins[:, None, None]).sum(1), atol=1e-5)
    assert 0.001 <= depth.min() and depth.max() <= 10.0  # an expectation over the bins stays in the range


def test_heads_need_class_tokens_with_a_clear_error():
    head = BNBinsDepthHead(in_channels=8, in_index=[0])
    with pytest.raises(ValueError, match='no class token'):
        head([torch.randn(1, 8, 3, 3)])
    assert BNBinsDepthHead(in_channels=8, use_class_token=False)([torch.randn(1, 8, 3, 3)]).shape == (1, 1, 12, 12)


def test_dpt_head_shapes_and_range():
    head = DPTDepthHead(in_channels=32, channels=16, post_process_channels=[4, 8, 16, 32], min_depth=0.5,
                        max_depth=10.0).eval()
    feats = [(torch.randn(2, 32, 6, 8), torch.randn(2, 32)) for _ in range(4)]
    depth = head(feats)
    assert depth.shape == (2, 1, 96, 128)  # x4 reassembly, x2 per fusion from the x1/2 level, x2 in the head
    assert depth.min() >= 0.5


# ------------------------------------------------------------------- losses and the padding trap


def silog_by_hand(pred, gt):
    d = np.log(pred) - np.log(gt)
    return np.sqrt((d**2).mean() - 0.5 * d.mean()**2)


def test_padding_is_no_depth_and_the_loss_ignores_it():
    """mmseg's stack_batch pads gt_depth_map with seg_pad_val: with 255 (every segmentation config's) mmseg's
    SiLogLoss learns the padding as 255 m; our depth preprocessor pads with 0 and the loss equals the mean of
    the per-image losses on the unpadded images."""
    from mmseg.models.data_preprocessor import SegDataPreProcessor
    torch.manual_seed(0)
    gts = [torch.rand(1, 10, 12) * 5 + 1, torch.rand(1, 14, 9) * 5 + 1]
    preds = [torch.rand(1, 1, 14, 12) * 5 + 1 for _ in gts]
    head = BNBinsDepthHead(in_channels=8, loss_decode=dict(type='SiLogLoss'))

    def padded_loss(pad_val):
        pre = SegDataPreProcessor(seg_pad_val=pad_val, size_divisor=1)
        data = pre(dict(inputs=[torch.zeros(3, *g.shape[-2:], dtype=torch.uint8) for g in gts],
                        data_samples=[sample(g.clone()) for g in gts]), training=True)
        return data['data_samples'], head.loss_by_feat(torch.cat(preds), data['data_samples'])['loss_silog']

    samples, ours = padded_loss(0)
    assert (samples[0].gt_depth_map.data[:, 10:] == 0).all() and (samples[1].gt_depth_map.data[..., 9:] == 0).all()
    by_hand = np.mean([silog_by_hand(p[0, 0, :g.shape[1], :g.shape[2]].double().numpy(), g[0].double().numpy())
                       for p, g in zip(preds, gts)])
    assert ours.item() == pytest.approx(by_hand, abs=1e-5)

    # the trap, upstream: 255-padded pixels are beyond max_depth, and our head zeroes them too
    samples, guarded = padded_loss(255)
    assert (samples[0].gt_depth_map.data[:, 10:] == 255).all()
    assert guarded.item() == pytest.approx(by_hand, abs=1e-5)
    from mmseg.models.losses import SiLogLoss
    gt = torch.stack([s.gt_depth_map.data for s in samples])
    upstream = SiLogLoss()(torch.cat(preds), gt)
    assert abs(upstream.item() - by_hand) > 0.1, 'mmseg SiLogLoss no longer counts 255 padding: re-check the guard'


def test_depth_estimator_refuses_255_padding():
    cfg = Config.fromfile(TINY_LINEAR)
    cfg.model.data_preprocessor.seg_pad_val = 255
    with pytest.raises(ValueError, match='seg_pad_val=255'):
        build(cfg.model)


def test_gradient_matching_loss():
    torch.manual_seed(0)
    gt = torch.rand(2, 1, 16, 20) * 4 + 1
    gt[0, 0, :3] = 0  # invalid rows
    loss = GradientMatchingLoss(loss_weight=1.0)
    # a scaled copy has the same structure: zero, but for the eps inside the logs
    assert GradientMatchingLoss(loss_weight=1.0, eps=0)(gt * 1.7, gt).item() == pytest.approx(0, abs=1e-5)
    noisy = gt * (1 + 0.2 * torch.rand_like(gt))
    assert loss(noisy, gt).item() > 0.05
    # by hand at the full scale: stride-2 differences of the masked log error, over the valid count
    one = GradientMatchingLoss(scales=1, loss_weight=1.0, eps=1e-3)
    e = (np.log(noisy.numpy() + 1e-3) - np.log(gt.numpy() + 1e-3)) * (gt.numpy() > 0)
    v = (gt.numpy() > 0).astype(float)
    ref = ((np.abs(e[..., :-2, :] - e[..., 2:, :]) * v[..., :-2, :] * v[..., 2:, :]).sum()
           + (np.abs(e[..., :-2] - e[..., 2:]) * v[..., :-2] * v[..., 2:]).sum()) / v.sum()
    assert one(noisy, gt).item() == pytest.approx(ref, rel=1e-5)


# ------------------------------------------------------------------- the metric


def metrics_by_hand(gt, pred, keep):
    """The nine metrics of one image from their definitions (numpy, float64)."""
    g, p = gt[keep], pred[keep]
    ratio = np.maximum(g / p, p / g)
    d = np.log(p) - np.log(g)
    return dict(d1=(ratio < 1.25).mean(), d2=(ratio < 1.25**2).mean(), d3=(ratio < 1.25**3).mean(),
                abs_rel=(np.abs(p - g) / g).mean(), sq_rel=((p - g)**2 / g).mean(), rmse=np.sqrt(((p - g)**2).mean()),
                rmse_log=np.sqrt((d**2).mean()), log10=np.abs(np.log10(p) - np.log10(g)).mean(),
                silog=np.sqrt((d**2).mean() - 0.5 * d.mean()**2))


def fixed_example():
    """Two 480 x 640 images: depth in a band crossing the Eigen crop's edges, holes, values past 10 m, and
    predictions below 1e-3 and above 10 m (clipped by the protocol)."""
    rng = np.random.default_rng(0)
    images = []
    for k in range(2):
        gt = np.zeros((480, 640))
        gt[30:60, 20:660] = rng.uniform(0.5, 9.0, size=(30, 620))  # rows 30-44 / cols 20-40 are outside the crop
        gt[470:480, 100:140] = rng.uniform(1, 9, size=(10, 40))  # row 470 inside, 471+ outside
        gt[40:50, 200:210] = 0  # holes
        gt[50:55, 300:320] = 12.0 + k  # beyond max_depth_eval
        pred = gt * rng.uniform(0.7, 1.4, size=gt.shape) + (gt == 0) * 3.0
        pred[45, 41:50] = 1e-5  # below min: clipped up to 1e-3
        pred[46, 41:50] = 25.0  # above max: clipped down to 10
        images.append((gt, pred))
    return images


def run_metric(metric, images):
    metric.process({}, [dict(img_path=f'img{i}.png', gt_depth_map=dict(data=torch.from_numpy(g)[None]),
                             pred_depth_map=dict(data=torch.from_numpy(p)[None]))
                        for i, (g, p) in enumerate(images)])
    return metric.compute_metrics(metric.results)


def test_metric_equals_a_hand_computation():
    from mmseg.evaluation.metrics import DepthMetric
    images = fixed_example()
    crop = np.zeros((480, 640), bool)
    crop[45:471, 41:601] = True

    def by_hand(clip):
        per_image = []
        for gt, pred in images:
            keep = (gt > 1e-3) & (gt < 10.0) & crop
            per_image.append(metrics_by_hand(gt, np.clip(pred, 1e-3, 10.0) if clip else pred, keep))
        return {k: np.mean([m[k] for m in per_image]) for k in METRICS}  # per image, then the mean

    ours = run_metric(CheckedDepthMetric(min_depth_eval=1e-3, max_depth_eval=10.0, crop_type='eigen'), images)
    assert set(ours) == set(METRICS)
    for k, v in by_hand(clip=True).items():
        assert ours[k] == pytest.approx(v, abs=1e-6), k
    # mmseg's own DepthMetric, which does not clip predictions, against the same hand computation without clipping
    upstream = run_metric(DepthMetric(min_depth_eval=1e-3, max_depth_eval=10.0, crop_type='nyu_crop'), images)
    for k, v in by_hand(clip=False).items():
        assert upstream[k] == pytest.approx(v, abs=1e-6), k
    ours_unclipped = run_metric(CheckedDepthMetric(min_depth_eval=1e-3, max_depth_eval=10.0, crop_type='nyu_crop',
                                                   clip_predictions=False), images)
    assert ours_unclipped == pytest.approx(upstream, abs=1e-12)


def test_eval_crops():
    assert torch.equal(eval_crop_mask((480, 640), 'eigen'), eval_crop_mask((480, 640), 'nyu_crop'))
    garg = eval_crop_mask((352, 1216), 'garg')
    rows, cols = garg.any(1).nonzero()[:, 0], garg.any(0).nonzero()[:, 0]
    assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == (143, 349, 43, 1172)  # int(frac * size)
    with pytest.raises(ValueError, match="use crop_type='eigen'"):
        eval_crop_mask((120, 160), 'nyu_crop')


def test_depth_metrics_list_works_upstream_raises():
    """mmseg 1.2: DepthMetric(depth_metrics=[...]) tests isinstance(x, [tuple, list]) -> TypeError (PR 3882)."""
    from mmseg.evaluation.metrics import DepthMetric
    with pytest.raises(TypeError):
        DepthMetric(depth_metrics=['rmse'])
    ours = run_metric(CheckedDepthMetric(depth_metrics=['rmse', 'd1'], max_depth_eval=10.0), fixed_example())
    assert list(ours) == ['rmse', 'd1']
    with pytest.raises(ValueError, match='each one of'):
        CheckedDepthMetric(depth_metrics=['rmse', 'mae'])


def test_metric_names_an_image_without_ground_truth():
    gt, pred = fixed_example()[0]
    with pytest.raises(ValueError, match='img0.png: no ground-truth pixel'):
        run_metric(CheckedDepthMetric(max_depth_eval=10.0, crop_type='eigen'), [(gt * 0, pred)])


# ------------------------------------------------------------------- slide inference really slides


def recorded_inference(model, image, upstream=False):
    """Runs predict, recording the sizes encode_decode sees and whether whole_inference ran."""
    from mmseg.models.segmentors import DepthEstimator
    seen, whole = [], []
    encode_decode, whole_inference = model.encode_decode, model.whole_inference
    model.encode_decode = lambda x, metas: seen.append(tuple(x.shape[-2:])) or encode_decode(x, metas)
    model.whole_inference = lambda x, metas: whole.append(1) or whole_inference(x, metas)
    metas = [dict(ori_shape=image.shape[-2:], img_shape=image.shape[-2:], pad_shape=image.shape[-2:],
                  padding_size=[0, 0, 0, 0])]
    with torch.no_grad():
        depth = (DepthEstimator.inference if upstream else type(model).inference)(model, image, metas)
    return depth, seen, whole


def test_slide_mode_slides(one_thread):
    model = tiny_model(mode='slide', crop_size=(56, 56), stride=(28, 28))
    image = torch.randn(1, 3, 84, 112)
    depth, seen, whole = recorded_inference(model, image)
    assert depth.shape == (1, 1, 84, 112)
    assert seen == [(56, 56)] * 6 and not whole  # 2 x 3 windows, never the whole image
    # upstream mmseg 1.2 (issue 3655): the windows run, then the whole image overwrites their result
    _, seen_up, whole_up = recorded_inference(model, image, upstream=True)
    assert whole_up and seen_up[-1] == (84, 112), 'mmseg fixed issue 3655: ViTDepthEstimator.inference may go'


def test_flip_averages_the_mirrored_prediction(one_thread):
    model = tiny_model(mode='whole', flip=True)
    image = torch.randn(1, 3, 56, 84)
    depth, seen, _ = recorded_inference(model, image)
    assert seen == [(56, 84)] * 2
    metas = [dict(ori_shape=(56, 84), img_shape=(56, 84), pad_shape=(56, 84))]
    with torch.no_grad():
        plain = model.whole_inference(image, metas)
        mirrored = model.whole_inference(image.flip(3), metas).flip(3)
    assert torch.allclose(depth, (plain + mirrored) / 2, atol=1e-6)


def test_unknown_test_mode_is_refused():
    with pytest.raises(ValueError, match="test_cfg.mode='slid'"):
        tiny_model(mode='slid')


# ------------------------------------------------------------------- bf16 backbone vs fp32, tiny


def test_bf16_frozen_backbone_close_to_fp32(one_thread):
    """The 6B configs store the frozen backbone in bf16; on the tiny model the depth it predicts stays within
    2% (mean relative) of the fp32 model's."""
    torch.manual_seed(0)
    fp32 = tiny_model(TINY_DPT)
    cfg = Config.fromfile(TINY_DPT)
    cfg.model.backbone.dtype = 'bfloat16'  # as the 6B configs: weights in bf16, norms in fp32
    bf16 = build(cfg.model).eval()
    bf16.load_state_dict(fp32.state_dict())  # the same weights, cast
    assert bf16.backbone.compute_dtype == torch.bfloat16
    image = torch.randn(2, 3, 56, 84)
    metas = [dict(ori_shape=(56, 84), img_shape=(56, 84), pad_shape=(56, 84))] * 2
    with torch.no_grad():
        a, b = fp32.whole_inference(image, metas), bf16.whole_inference(image, metas)
    rel = ((a - b).abs() / a).mean().item()
    print(f'tiny DPT depth, bf16 vs fp32 frozen backbone: mean relative difference {rel:.4%}')
    assert b.dtype == torch.float32 and rel < 0.02


# ------------------------------------------------------------------- the 6B configs on meta


CONFIGS = [f'configs/depth/internvit_6b_{h}_frozen_{d}.py' for h in ('linear1', 'linear4', 'dpt')
           for d in ('nyu', 'kitti')]


@pytest.mark.parametrize('config', CONFIGS)
def test_6b_configs_build_on_meta(config):
    cfg = Config.fromfile(os.path.join(ROOT, config))
    with torch.device('meta'):
        model = build(cfg.model)
    backbone = sum(p.numel() for p in model.backbone.parameters())
    head = sum(p.numel() for p in model.decode_head.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f'{config}: backbone {backbone:,} + head {head:,} parameters; trainable {trainable:,}')
    assert 5.8e9 < backbone < 6.0e9 and trainable == head
    assert model.backbone.weight_dtype == torch.bfloat16
    if 'linear' in config:
        blocks = len(model.backbone.out_indices)
        assert model.backbone.out_indices == ([44] if blocks == 1 else [11, 23, 35, 47])
        # BN (weight, bias) on [patch, cls] of each block, then the 1x1 conv into 256 bins
        feat = 3200 * 2 * blocks
        assert head == 2 * feat + feat * 256 + 256
    crop = cfg.train_dataloader.dataset.pipeline
    size = next(t['crop_size'] for t in crop if t['type'] == 'RandomCrop')
    assert all(s % 14 == 0 for s in size)
    max_depth = 80.0 if 'kitti' in config else 10.0
    assert model.decode_head.max_depth == max_depth and cfg.test_evaluator.max_depth_eval == max_depth
    if 'kitti' in config:
        assert cfg.model.test_cfg.mode == 'slide' and all(s % 14 == 0 for s in cfg.model.test_cfg.crop_size)


# ------------------------------------------------------------------- KITTI


def test_kitti_split_file_benchmark_crop_and_sparse_depth(tmp_path):
    """The Eigen-split file format, 16-bit depth / 256, the 352 x 1216 benchmark crop, Garg's crop and the 80 m cap."""
    from mmcv.transforms import Compose
    from mmengine.registry import init_default_scope
    from PIL import Image

    from internvit_dense.datasets.depth import KITTIDepthDataset
    init_default_scope('mmseg')
    rng = np.random.default_rng(0)
    lines = []
    for i in range(2):
        img = f'2011_09_26/drive_0001_sync/image_02/data/{i:010d}.png'
        gt = f'drive_0001_sync/proj_depth/groundtruth/image_02/{i:010d}.png'
        os.makedirs(tmp_path / 'raw' / os.path.dirname(img), exist_ok=True)
        os.makedirs(tmp_path / 'gt_depth' / os.path.dirname(gt), exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (375, 1242, 3), dtype=np.uint8)).save(tmp_path / 'raw' / img)
        depth = np.zeros((375, 1242), np.uint16)
        depth[200:, ::7] = (rng.uniform(2, 90, size=depth[200:, ::7].shape) * 256).astype(np.uint16)  # sparse
        Image.fromarray(depth).save(tmp_path / 'gt_depth' / gt)
        lines.append(f'{img} {gt} 721.5377')
    (tmp_path / 'test.txt').write_text('\n'.join(lines) + '\n')
    (tmp_path / 'train.txt').write_text('\n'.join(lines + ['2011_09_26/x.png None 721.5377']) + '\n')

    cfg = Config.fromfile(os.path.join(ROOT, 'configs/depth/internvit_6b_linear4_frozen_kitti.py'))
    pipeline = Compose([t for t in cfg.test_pipeline])
    test = KITTIDepthDataset(ann_file='test.txt', data_root=str(tmp_path), test_mode=True)
    assert len(test) == 2 and len(KITTIDepthDataset(ann_file='train.txt', data_root=str(tmp_path))) == 2
    out = pipeline(test.get_data_info(0))
    assert out['inputs'].shape[-2:] == (352, 1216) and out['data_samples'].ori_shape == (352, 1216)
    gt = out['data_samples'].gt_depth_map.data[0]
    raw = np.asarray(Image.open(tmp_path / 'gt_depth' / lines[0].split()[1]), np.float64)[375 - 352:, 13:13 + 1216]
    assert torch.allclose(gt.double(), torch.from_numpy(raw / 256.0))  # bottom rows, centred columns, metres

    metric = CheckedDepthMetric(min_depth_eval=1e-3, max_depth_eval=80.0, crop_type='garg')
    pred = torch.full_like(gt, 20.0)
    got = run_metric(metric, [(gt.double().numpy(), pred.double().numpy())])
    keep = (gt.numpy() > 1e-3) & (gt.numpy() < 80) & eval_crop_mask(gt.shape, 'garg').numpy()
    assert 0 < keep.sum() < (gt.numpy() > 0).sum()  # the cap and the crop both drop pixels; zeros never count
    assert got['rmse'] == pytest.approx(metrics_by_hand(gt.double().numpy(), pred.double().numpy(), keep)['rmse'],
                                        abs=1e-6)
    with pytest.raises(ValueError, match='has no ground truth'):
        KITTIDepthDataset(ann_file='train.txt', data_root=str(tmp_path), test_mode=True)


# three of the six (each builds a ViT-L in ~6 s here): every head and both data sets are among them
TIMM_CONFIGS = [f'configs/depth/timm_dinov2_vitl14_{c}.py' for c in ('linear1_frozen_kitti', 'linear4_frozen_nyu',
                                                                     'dpt_frozen_kitti')]


@pytest.mark.parametrize('config', TIMM_CONFIGS)
def test_dinov2_vitl14_configs_build_on_meta(config):
    """The comparison configs: DINOv2 ViT-L/14 through TimmEncoder, DINOv2's blocks, the same heads and recipe."""
    from internvit_dense.models.backbones import TimmEncoder
    cfg = Config.fromfile(os.path.join(ROOT, config))
    with torch.device('meta'):
        model = build(cfg.model)
        bb = model.backbone
        assert isinstance(bb, TimmEncoder) and bb.model_name == 'vit_large_patch14_dinov2.lvd142m' and bb.frozen
        assert bb.out_indices == ([23] if 'linear1' in config else [4, 11, 17, 23])
        size = (350, 1204) if 'kitti' in config else (420, 546)
        depth = model._forward(torch.empty(1, 3, *size))  # [patch, class token] pairs reach the head
    backbone = sum(p.numel() for p in bb.parameters())
    head = sum(p.numel() for p in model.decode_head.parameters())
    print(f'{config}: backbone {backbone:,} + head {head:,} parameters')
    assert 300e6 < backbone < 310e6 and all(not p.requires_grad for p in bb.parameters())
    assert depth.shape[:2] == (1, 1)
    ref = Config.fromfile(os.path.join(ROOT, config.replace('timm_dinov2_vitl14', 'internvit_6b')))
    assert cfg.train_dataloader == ref.train_dataloader and cfg.param_scheduler == ref.param_scheduler
    assert cfg.model.test_cfg == ref.model.test_cfg and cfg.test_evaluator == ref.test_evaluator
