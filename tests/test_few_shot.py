"""The few-shot rows of InternVL's ADE20K table: configs on the meta device, schedules, subsets, a tiny run."""
import os

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from seg_utils import ROOT, data_options, run_tool

import internvit_dense.datasets  # noqa: F401
import internvit_dense.models  # noqa: F401
from internvit_dense.datasets.ade20k import few_shot_subset, subset_fingerprint
from internvit_dense.datasets.synthetic_ade20k import generate_synthetic_ade20k

# row: (1/N of the images, k iterations, warm-up iterations, paper mIoU), as InternVL's
# few_shot/linear_intern_vit_6b_504_{k}k_ade20k_bs16_lr4e-5_1of{N}.py
ROWS = [(16, 5, 100, 46.5), (8, 10, 200, 50.0), (4, 20, 400, 53.3), (2, 40, 800, 55.8), (1, 80, 1500, 57.2)]
ADE20K_TRAIN = 20210
HEAD = 3200 * 150 + 150 + 2 * 3200  # BatchNorm(3200) + 1x1 conv 3200 -> 150
# InternViT-6B at the 504 grid: 48 blocks (224px checkpoint) or 45 (448px ones, last 3 dropped)
BLOCK = 3 * 3200 * 3200 + 3200 * 3200 + 3200 + 2 * 3200 * 12800 + 12800 + 3200 + 6 * 3200
EMBED = 3200 * 3 * 14 * 14 + 3200 + 3200 + 1297 * 3200


def path(n, k, ckpt='', suffix=''):
    return os.path.join(ROOT, f'configs/segmentation/internvit_6b_{ckpt}linear_full_ade20k_504_1of{n}_{k}k{suffix}.py')


def build_on_meta(cfg):
    init_default_scope('mmseg')
    from mmseg.registry import MODELS
    with torch.device('meta'):
        return MODELS.build(cfg.model)


@pytest.mark.parametrize('ckpt,depth', [('', 48), ('448_', 45)])
@pytest.mark.parametrize('n,k,warmup,miou', ROWS)
def test_few_shot_configs_follow_internvl(n, k, warmup, miou, ckpt, depth):
    cfg = Config.fromfile(path(n, k, ckpt))
    model = build_on_meta(cfg)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == total == EMBED + depth * BLOCK + HEAD, (trainable, total)  # full tuning: everything learns
    bb = model.backbone
    assert bb.depth == depth and bb.out_indices == [depth - 1] and not bb.frozen and bb.with_cp
    assert bb.blocks[-1].drop_path.drop_prob == pytest.approx(0.4)
    assert type(model.decode_head).__name__ == 'BNLinearHead' and not model.with_auxiliary_head
    # the schedule: AdamW 4e-5, wd 0.05, layer decay 0.95, linear warm-up then poly to 0 at the row's length
    assert cfg.train_cfg.max_iters == k * 1000 and cfg.train_cfg.val_interval == 1000
    opt = cfg.optim_wrapper
    assert (opt.optimizer.type, opt.optimizer.lr, opt.optimizer.weight_decay) == ('AdamW', 4e-5, 0.05)
    assert opt.paramwise_cfg.layer_decay_rate == 0.95
    warm, poly = cfg.param_scheduler
    assert (warm.type, warm.begin, warm.end, warm.start_factor) == ('LinearLR', 0, warmup, 1e-6)
    assert (poly.type, poly.begin, poly.end, poly.power, poly.eta_min) == ('PolyLR', warmup, k * 1000, 1.0, 0.0)
    assert cfg.train_dataloader.batch_size == 2  # x 8 GPUs = InternVL's 16
    assert cfg.train_dataloader.dataset.subset_denominator == n
    assert cfg.model.test_cfg == dict(mode='slide', crop_size=(504, 504), stride=(322, 322))
    assert cfg.default_hooks.checkpoint.interval == 1000


@pytest.mark.parametrize('n,k', [(n, k) for n, k, _, _ in ROWS])
def test_few_shot_deepspeed_form(n, k):
    cfg = Config.fromfile(path(n, k, suffix='_deepspeed'))
    assert cfg.strategy.type == 'DeepSpeedStrategy' and cfg.strategy.zero_optimization.stage == 1
    assert cfg.strategy.bf16.enabled and cfg.train_cfg.max_iters == k * 1000
    assert cfg.train_dataloader.dataset.subset_denominator == n


def test_subset_sizes_nested_and_the_same_everywhere():
    data = [dict(img_path=f'images/training/ADE_train_{i:08d}.jpg') for i in range(1, ADE20K_TRAIN + 1)]
    subsets = {n: few_shot_subset(list(reversed(data)), n) for n, *_ in ROWS}  # input order does not matter
    assert {n: len(s) for n, s in subsets.items()} == {16: 1263, 8: 2526, 4: 5052, 2: 10105, 1: 20210}
    names = {n: {d['img_path'] for d in s} for n, s in subsets.items()}
    assert names[16] < names[8] < names[4] < names[2] < names[1]  # nested: 1/16 is inside 1/8, ...
    assert few_shot_subset(data, 16) == subsets[16]  # deterministic
    assert few_shot_subset(data, 16, seed=1) != subsets[16]
    # the documented subset, by fingerprint: the same on every machine and Python version
    assert subset_fingerprint(subsets[16]) == subset_fingerprint(few_shot_subset(data[::-1], 16))
    with pytest.raises(ValueError, match='too few images'):
        few_shot_subset(data[:3], 4)


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('synthetic_ade20k')
    generate_synthetic_ade20k(str(root), num_train=40, num_val=4, seed=0, progress=False, overwrite=True)
    return root


def test_dataset_keeps_the_subset(data_root):
    from mmseg.registry import DATASETS
    init_default_scope('mmseg')
    cfg = Config.fromfile(os.path.join(ROOT, 'configs/segmentation/tiny/tiny_linear_full_fewshot_synthetic.py'))
    ds = DATASETS.build(dict(cfg.train_dataloader.dataset, data_root=str(data_root)))
    assert len(ds) == 40 // 4
    with pytest.raises(ValueError, match='subset_denominator must be a whole number'):
        DATASETS.build(dict(cfg.train_dataloader.dataset, data_root=str(data_root), subset_denominator=0.5))


def test_tiny_few_shot_trains(data_root, tmp_path):
    work = tmp_path / 'work'
    config = 'configs/segmentation/tiny/tiny_linear_full_fewshot_synthetic.py'
    proc = run_tool('train.py', config, '--work-dir', work,
                    *data_options(data_root, ['train_cfg.max_iters=4', 'train_cfg.val_interval=4',
                                              'default_hooks.checkpoint.interval=4',
                                              'train_dataloader.batch_size=2', 'train_dataloader.num_workers=0',
                                              'train_dataloader.persistent_workers=False',
                                              'val_dataloader.num_workers=0',
                                              'val_dataloader.persistent_workers=False']))
    log = proc.stdout + proc.stderr
    assert 'few-shot subset of' in log and '10 images (1/4, seed 0' in log
    assert (work / 'iter_4.pth').is_file()
    sd = torch.load(work / 'iter_4.pth', map_location='cpu', weights_only=False)['state_dict']
    assert 'decode_head.bn.running_mean' in sd and 'backbone.blocks.3.mlp.fc2.weight' in sd
