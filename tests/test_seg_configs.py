"""The InternVL ADE20K configs, built on the meta device (no 6B allocation)."""
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

import internvit_dense.datasets  # noqa: F401
import internvit_dense.models  # noqa: F401

BACKBONE_224, BACKBONE_448 = 5.9e9, 5.54e9
# config: (trainable, total) as in the segmentation issue's table, for the 224px (48-block) backbone.
# The table rounds to one decimal (0.4B, 6.3B): a count matches within 5% or within that rounding.
TABLE = {
    'linear_frozen': (0.5e6, 5.9e9),
    'upernet_frozen': (0.4e9, 6.3e9),
    'upernet_full': (6.3e9, 6.3e9),
}


def build_on_meta(path):
    cfg = Config.fromfile(path)
    init_default_scope('mmseg')
    from mmseg.registry import MODELS
    with torch.device('meta'):
        model = MODELS.build(cfg.model)
    return cfg, model


@pytest.mark.parametrize('ckpt', ['', '448_'])
@pytest.mark.parametrize('recipe', sorted(TABLE))
def test_6b_configs_parameter_counts(recipe, ckpt):
    cfg, model = build_on_meta(f'configs/segmentation/internvit_6b_{ckpt}{recipe}_ade20k_504.py')
    # The paper counts the model that infers: without the auxiliary head, dropped after training (InternVL's
    # is a 3x3 conv 3200 -> 1536, 44M parameters: with it head tuning would be 0.48B, not 0.4B).
    params = [p for n, p in model.named_parameters() if not n.startswith('auxiliary_head.')]
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    exp_trainable, exp_total = TABLE[recipe]
    if ckpt:  # the 448px checkpoints are used with 45 of their 48 blocks
        exp_total -= BACKBONE_224 - BACKBONE_448
        if recipe == 'upernet_full':
            exp_trainable = exp_total
    print(f'{recipe} {ckpt or "224_"}: trainable {trainable / 1e9:.4f}B / total {total / 1e9:.4f}B')
    for got, exp in ((trainable, exp_trainable), (total, exp_total)):
        rounding = 0.05e6 if exp < 1e8 else 0.05e9
        assert abs(got - exp) <= max(0.05 * exp, rounding), (got, exp)


@pytest.mark.parametrize('ckpt,depth,indices', [('', 48, {'linear': [44], 'upernet': [11, 23, 35, 47]}),
                                                ('448_', 45, {'linear': [44], 'upernet': [11, 22, 33, 44]})])
def test_6b_configs_follow_the_recipe(ckpt, depth, indices):
    for recipe in TABLE:
        cfg, model = build_on_meta(f'configs/segmentation/internvit_6b_{ckpt}{recipe}_ade20k_504.py')
        bb = model.backbone
        assert bb.depth == depth and bb.out_indices == indices[recipe.split('_')[0]]
        # InternVL's segmentation backbone holds the position embedding at the 504 crop's grid
        assert bb.pos_embed.shape[1] == 1 + 36 * 36
        if recipe.startswith('upernet'):
            assert model.auxiliary_head.channels == 1536  # InternVL's configs: auxiliary_head channels=1536
            # on level 1 in InternVL's head-tuning config; its full-tuning one keeps mmseg's default, 2
            assert model.auxiliary_head.in_index == {'upernet_frozen': 1, 'upernet_full': 2}[recipe]
        assert bb.frozen == recipe.endswith('frozen')
        assert cfg.train_dataloader.dataset.pipeline[4]['crop_size'] == (504, 504)
        assert cfg.model.test_cfg == dict(mode='slide', crop_size=(504, 504), stride=(322, 322))
        # InternVL's test protocol: short side 504 (long side uncapped), then both sides to a multiple of 14
        resize, multiple = cfg.test_dataloader.dataset.pipeline[1:3]
        assert (resize['type'], resize['scale'], multiple['type'], multiple['size_divisor']) == (
            'ResizeShortestEdge', 504, 'ResizeToMultiple', 14)
        assert cfg.train_cfg.max_iters == 80000 and cfg.optim_wrapper.optimizer.lr == 4e-5
        assert cfg.param_scheduler[0]['end'] == 1500
        wd = cfg.optim_wrapper.optimizer.weight_decay
        decay = cfg.optim_wrapper.paramwise_cfg.layer_decay_rate
        assert (wd, decay) == {'linear_frozen': (0.0, 1.0), 'upernet_frozen': (0.05, 1.0),
                               'upernet_full': (0.05, 0.95)}[recipe]
        expected_dpr = 0.4 if recipe == 'upernet_full' else 0.0
        assert getattr(bb.blocks[-1].drop_path, 'drop_prob', 0.0) == pytest.approx(expected_dpr)


def test_pyramid_strides_at_504():
    cfg, model = build_on_meta('configs/segmentation/internvit_6b_upernet_frozen_ade20k_504.py')
    feats = [torch.empty(1, 3200, 36, 36, device='meta')] * 4
    outs = model.neck(feats)
    assert [tuple(o.shape[-2:]) for o in outs] == [(144, 144), (72, 72), (36, 36), (18, 18)]
