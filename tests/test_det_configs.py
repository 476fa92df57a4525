"""The COCO detection configs: the 6B ones built on the meta device (no 6B allocation), the tiny ones run."""
import pytest
import torch
from conftest import load_tool
from mmengine.config import Config
from mmengine.registry import init_default_scope

import internvit_dense.datasets  # noqa: F401
import internvit_dense.engine  # noqa: F401
import internvit_dense.models  # noqa: F401

DET = 'configs/detection/'
# Hand estimate of the parameter counts (C = 3200, FPN width 256, 80 classes):
# - InternViT-6B at 16 px patches: 48 blocks x (qkv 3C^2 + proj C^2 + MLP 8C^2 + norms, biases, layer scales)
#   = 48 x 122.9M = 5.900B, plus patch embedding 3*16^2*C = 2.5M and position embedding 257*C = 0.8M: 5.903B.
# - ViT-Adapter: 4 injectors (deformable attention over 3 levels: offsets C*600 + weights C*300 + values
#   C*C/2 + output C/2*C = 13.1M), 6 extractors (one level: 11.2M, plus a ConvFFN 2*C*C/4 = 5.1M), the
#   stride-8 -> 4 transposed conv 4C^2 = 41M and the conv spatial prior (3.3M): 4*13.1 + 6*16.4 + 41 + 3.3 = 0.195B.
# - Simple feature pyramid: three 2x2 transposed convs 3 x 4C^2 = 0.123B.
# - Mask R-CNN: FPN 4*C*256 + 4*256^2*9 = 5.6M, RPN 0.6M, box head 256*49*1024 + 1024^2 + 1024*(81+320) = 14.3M,
#   mask head 4*256^2*9 + 256^2*4 + 256*80 = 2.6M: 23.1M. Cascade: three 4conv1fc box heads of 15.6M instead.
BACKBONE = 5.903e9
ADAPTER = 0.195e9
SFP = 0.123e9
MASK_RCNN = 23.1e6
CASCADE = MASK_RCNN - 14.3e6 + 3 * 15.6e6
# config: (trainable, total)
EXPECTED = {
    'internvit_6b_sfp_mask-rcnn_fpn_frozen_1x_coco': (SFP + MASK_RCNN, BACKBONE + SFP + MASK_RCNN),
    'internvit_6b_adapter_mask-rcnn_fpn_frozen_1x_coco': (ADAPTER + MASK_RCNN, BACKBONE + ADAPTER + MASK_RCNN),
    'internvit_6b_adapter_mask-rcnn_fpn_full_3x_ms_coco': (BACKBONE + ADAPTER + MASK_RCNN,) * 2,
    'internvit_6b_adapter_cascade-mask-rcnn_fpn_full_3x_ms_coco': (BACKBONE + ADAPTER + CASCADE,) * 2,
}
TINY = ['tiny_mask-rcnn_fpn_synthetic', 'tiny_adapter_mask-rcnn_fpn_synthetic',
        'tiny_adapter_cascade-mask-rcnn_fpn_synthetic']


def build_on_meta(name):
    cfg = Config.fromfile(f'{DET}{name}.py')
    init_default_scope('mmdet')
    from mmdet.registry import MODELS
    with torch.device('meta'):
        model = MODELS.build(cfg.model)
    return cfg, model


def vit_of(model):
    return getattr(model.backbone, 'vit', model.backbone)


@pytest.mark.parametrize('name', sorted(EXPECTED))
def test_6b_configs_parameter_counts(name):
    cfg, model = build_on_meta(name)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    parts = {part: sum(p.numel() for p in getattr(model, part).parameters())
             for part in ('backbone', 'neck', 'rpn_head', 'roi_head')}
    print(f'{name}: trainable {trainable / 1e9:.4f}B / total {total / 1e9:.4f}B (' +
          ', '.join(f'{k} {v / 1e6:,.1f}M' for k, v in parts.items()) + ')')
    exp_trainable, exp_total = EXPECTED[name]
    for got, exp in ((trainable, exp_trainable), (total, exp_total)):
        assert got == pytest.approx(exp, rel=0.02)
    assert sum(p.numel() for p in vit_of(model).parameters()) == pytest.approx(BACKBONE, rel=0.001)


@pytest.mark.parametrize('name', sorted(EXPECTED))
def test_6b_configs_follow_the_recipes(name):
    cfg, model = build_on_meta(name)
    vit = vit_of(model)
    full = '_full_' in name
    # 16 px patches on the checkpoint's 16x16 position grid, 48 blocks
    assert vit.depth == 48 and vit.patch_size == 16 and vit.pretrain_grid == (16, 16)
    assert vit.frozen == (not full)
    assert getattr(vit.blocks[-1].drop_path, 'drop_prob', 0.0) == pytest.approx(0.4 if full else 0.0)
    windows = [blk.window_size for blk in vit.blocks]
    if '_sfp_' in name:  # InternVL's: every block windowed
        assert windows == [16] * 48
        assert list(vit.out_indices) == [47] * 4
        assert isinstance(model.neck, torch.nn.Sequential)
        assert [type(m).__name__ for m in model.neck] == ['Feature2Pyramid', 'FPN']
    else:  # ViTDet's: global attention in 4 evenly spaced blocks, the adapter's interaction ends
        assert [i for i, w in enumerate(windows) if w == 0] == [11, 23, 35, 47]
        assert set(windows) == {0, 16}
        assert model.backbone.interaction_indexes == [(0, 11), (12, 23), (24, 35), (36, 47)]
    assert type(model).__name__ == ('CascadeRCNN' if 'cascade' in name else 'MaskRCNN')
    # a cascade has one box and one mask head per stage
    heads = [h for part in (model.roi_head.bbox_head, model.roi_head.mask_head)
             for h in (part if isinstance(part, torch.nn.ModuleList) else [part])]
    assert len(heads) == (6 if 'cascade' in name else 2) and all(h.num_classes == 80 for h in heads)

    opt = cfg.optim_wrapper
    assert opt.optimizer.type == 'AdamW' and opt.optimizer.lr == 1e-4 and opt.optimizer.weight_decay == 0.05
    assert opt.paramwise_cfg.layer_decay_rate == (0.95 if full else 1.0)
    epochs, milestones = (36, [27, 33]) if '_3x_' in name else (12, [8, 11])
    assert cfg.train_cfg.max_epochs == epochs and cfg.param_scheduler[1]['milestones'] == milestones
    assert cfg.train_dataloader.batch_size == 2 and cfg.auto_scale_lr.base_batch_size == 16
    transforms = [t['type'] for t in cfg.train_dataloader.dataset.pipeline]
    if '_ms_' in name:
        assert 'RandomChoice' in transforms and 'RandomCrop' in transforms
    else:
        assert 'Resize' in transforms and cfg.train_dataloader.dataset.pipeline[2]['scale'] == (1333, 800)
    assert cfg.val_evaluator.type == 'CocoMetric' and cfg.val_evaluator.metric == ['bbox', 'segm']
    assert cfg.train_dataloader.dataset.ann_file == 'annotations/instances_train2017.json'
    assert cfg.default_scope == 'mmdet'


def test_simple_pyramid_strides_at_coco_size():
    _, model = build_on_meta('internvit_6b_sfp_mask-rcnn_fpn_frozen_1x_coco')
    with torch.no_grad():
        feats = model.extract_feat(torch.empty(1, 3, 800, 1344, device='meta'))
    # strides 4, 8, 16, 32 and FPN's extra 64, where the anchors and RoIAlign expect them
    assert [tuple(f.shape) for f in feats] == [(1, 256, 800 // s, 1344 // s) for s in (4, 8, 16, 32)] + \
        [(1, 256, 13, 21)]


def test_full_tuning_layer_decay_spans_the_6b():
    cfg, model = build_on_meta('internvit_6b_adapter_mask-rcnn_fpn_full_3x_ms_coco')
    from mmdet.registry import OPTIM_WRAPPER_CONSTRUCTORS
    opt = cfg.optim_wrapper.copy()
    constructor = OPTIM_WRAPPER_CONSTRUCTORS.build(dict(type=opt.pop('constructor'), optim_wrapper_cfg=opt,
                                                        paramwise_cfg=opt.pop('paramwise_cfg')))
    wrapper = constructor(model)
    lr_of = {id(p): g['lr'] for g in wrapper.optimizer.param_groups for p in g['params']}
    params = dict(model.named_parameters())
    assert len(lr_of) == len(params)
    base = 1e-4
    assert lr_of[id(params['backbone.vit.patch_embed.proj.weight'])] == pytest.approx(base * 0.95 ** 49)
    assert lr_of[id(params['backbone.vit.blocks.47.mlp.fc1.weight'])] == pytest.approx(base * 0.95)
    for name in ('backbone.spm.stem.0.0.weight', 'backbone.interactions.0.injector.gamma',
                 'neck.lateral_convs.0.conv.weight', 'roi_head.mask_head.conv_logits.weight'):
        assert lr_of[id(params[name])] == pytest.approx(base)


@pytest.fixture(scope='module')
def tiny_data(coco_small):
    return coco_small  # the test run's shared 8-image set (tests/conftest.py)


@pytest.mark.parametrize('name', TINY)
def test_tiny_configs_train_and_predict(name, tiny_data, tmp_path, one_thread):
    """A few optimizer steps and a prediction through mmengine's Runner: the pieces fit together."""
    from mmengine.runner import Runner
    cfg = Config.fromfile(f'{DET}tiny/{name}.py')
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = str(tiny_data)
        cfg[loader].num_workers = 0
        cfg[loader].persistent_workers = False
    cfg.val_evaluator.ann_file = cfg.test_evaluator.ann_file = f'{tiny_data}/annotations/instances_val2017.json'
    cfg.work_dir = str(tmp_path)
    cfg.log_level = 'WARNING'
    runner = Runner.from_cfg(cfg)
    model = runner.model
    optim = runner.build_optim_wrapper(cfg.optim_wrapper)
    batches = iter(runner.build_dataloader(cfg.train_dataloader))
    model.train()
    for _ in range(2):
        losses = model.train_step(next(batches), optim)
        # cascade stages log as s0.loss_cls, s1.loss_cls, ...
        assert {'loss_rpn_cls', 'loss_cls', 'loss_bbox', 'loss_mask'} <= {k.split('.')[-1] for k in losses}
        assert all(torch.isfinite(torch.as_tensor(v)).all() for v in losses.values())
    model.eval()
    with torch.no_grad():
        outputs = model.test_step(next(iter(runner.build_dataloader(cfg.test_dataloader))))
    pred = outputs[0].pred_instances
    assert pred.masks.shape[-2:] == tuple(outputs[0].ori_shape) and pred.bboxes.shape[-1] == 4
    assert (pred.labels < 4).all()


def test_test_tool_tta_takes_the_configs_pipeline_or_says_there_is_none():
    tool = load_tool('test')
    seg = Config.fromfile('configs/segmentation/internvit_6b_upernet_full_ade20k_504.py')
    plain_model = seg.model.copy()
    assert tool.apply_tta(seg) == 6 * 2  # ratios x flips
    assert seg.model.type == 'SegTTAModel' and seg.model.module == plain_model
    assert seg.test_dataloader.dataset.pipeline == seg.tta_pipeline
    det = Config.fromfile(f'{DET}internvit_6b_adapter_mask-rcnn_fpn_frozen_1x_coco.py')
    with pytest.raises(SystemExit, match='defines no tta_model and no tta_pipeline'):
        tool.apply_tta(det)


def test_test_tool_out_writes_what_each_task_produces(tmp_path):
    """tools/test.py --out: COCO results JSON for detection, label-map PNGs for segmentation."""
    from mmengine.config import ConfigDict
    tool = load_tool('test')
    det = Config.fromfile(f'{DET}internvit_6b_adapter_mask-rcnn_fpn_frozen_1x_coco.py').test_evaluator
    assert 'COCO' in tool.direct_output(det, str(tmp_path))
    assert det.outfile_prefix == str(tmp_path / 'coco_results') and 'output_dir' not in det
    seg = ConfigDict(type='IoUMetric', iou_metrics=['mIoU'])
    assert 'label maps' in tool.direct_output(seg, str(tmp_path))
    assert seg.output_dir == str(tmp_path) and seg.keep_results
    both = [ConfigDict(type='CocoMetric'), ConfigDict(type='IoUMetric')]
    tool.direct_output(both, str(tmp_path))
    assert both[0].outfile_prefix.endswith('coco_results') and both[1].output_dir == str(tmp_path)
