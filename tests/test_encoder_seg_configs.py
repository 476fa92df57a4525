"""Segmentation with another library's encoder through the same heads: the ViT-L (timm DINOv2) configs
built on the meta device, and their tiny versions trained briefly through tools/train.py and tools/test.py."""
import os
import re

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from seg_utils import ROOT, data_options, load_ckpt, miou_of, run_tool

import internvit_dense.datasets  # noqa: F401
import internvit_dense.models  # noqa: F401
from internvit_dense.datasets.synthetic_ade20k import generate_synthetic_ade20k
from internvit_dense.models.backbones import TimmEncoder

VIT_L = 'configs/segmentation/timm_dinov2_vitl14_{}_ade20k_504.py'
TINY = 'configs/segmentation/tiny/tiny_timm_{}_synthetic.py'
SHORT = ['train_cfg.max_iters=30', 'train_cfg.val_interval=1000', 'default_hooks.checkpoint.interval=30',
         'default_hooks.checkpoint.save_best=None', 'train_dataloader.batch_size=4']


def build_on_meta(path):
    cfg = Config.fromfile(os.path.join(ROOT, path))
    init_default_scope('mmseg')
    from mmseg.registry import MODELS
    with torch.device('meta'):
        model = MODELS.build(cfg.model)
    return cfg, model


@pytest.mark.parametrize('recipe,indices', [('linear_frozen', [23]), ('upernet_frozen', [5, 11, 17, 23])])
def test_vit_large_configs_on_meta(recipe, indices):
    cfg, model = build_on_meta(VIT_L.format(recipe))
    bb = model.backbone
    assert isinstance(bb, TimmEncoder) and bb.model_name == 'vit_large_patch14_dinov2.lvd142m'
    assert (bb.depth, bb.embed_dims, bb.patch_size, bb.out_indices, bb.frozen) == (24, 1024, 14, indices, True)
    backbone_params = sum(p.numel() for p in bb.parameters())
    assert 300e6 < backbone_params < 310e6  # ViT-L/14
    assert not any(p.requires_grad for p in bb.parameters())
    assert bb.init_cfg['checkpoint'] == 'pretrained/vit_large_patch14_dinov2.lvd142m.safetensors'
    feats = bb(torch.empty(1, 3, 504, 504, device='meta'))
    assert [tuple(f.shape) for f in feats] == [(1, 1024, 36, 36)] * len(indices)  # InternViT's grid at 504
    if recipe == 'upernet_frozen':
        assert [tuple(o.shape[-2:]) for o in model.neck(feats)] == [(144, 144), (72, 72), (36, 36), (18, 18)]
        assert model.decode_head.in_channels == [1024] * 4 and model.auxiliary_head.in_channels == 1024
    else:
        assert model.decode_head.in_channels == 1024
        assert cfg.optim_wrapper.optimizer.weight_decay == 0.0
    # the same recipe as the InternViT-6B config otherwise: data, schedule, test mode
    ref = Config.fromfile(os.path.join(ROOT, f'configs/segmentation/internvit_6b_{recipe}_ade20k_504.py'))
    assert cfg.train_dataloader == ref.train_dataloader and cfg.param_scheduler == ref.param_scheduler
    assert cfg.model.test_cfg == ref.model.test_cfg and cfg.optim_wrapper == ref.optim_wrapper


@pytest.fixture(scope='module')
def small_data(tmp_path_factory):
    root = tmp_path_factory.mktemp('small_ade_timm')
    generate_synthetic_ade20k(str(root), num_train=12, num_val=4, seed=1, progress=False, overwrite=True)
    return root


@pytest.mark.parametrize('recipe', ['linear_frozen', 'upernet_frozen'])
def test_tiny_versions_train_with_a_pretrained_file_and_a_frozen_encoder(recipe, small_data, tmp_path):
    """A 'pretrained' tiny timm DINOv2 file, loaded by the config's init_cfg; after training, the encoder in the
    checkpoint is that file's weights bit for bit and the heads learnt."""
    from safetensors.torch import save_file

    cfg = Config.fromfile(os.path.join(ROOT, TINY.format(recipe)))
    enc = TimmEncoder(**{k: v for k, v in cfg.model.backbone.items() if k not in ('type', '_delete_')})
    torch.manual_seed(3)
    for p in enc.model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    weights = {k: v.clone() for k, v in enc.model.state_dict().items()}
    save_file(weights, str(tmp_path / 'tiny_dinov2.safetensors'))
    config = tmp_path / f'{recipe}.py'
    config.write_text(f"_base_ = ['{os.path.join(ROOT, TINY.format(recipe))}']\n"
                      f"model = dict(backbone=dict(init_cfg=dict(type='Pretrained', "
                      f"checkpoint='{tmp_path}/tiny_dinov2.safetensors')))\n"
                      # 30 iterations at the tiny schedule's full rate (its warm-up alone is 30)
                      "param_scheduler = [dict(type='ConstantLR', factor=1.0, end=30, by_epoch=False)]\n")
    work = tmp_path / 'work'
    proc = run_tool('train.py', config, '--work-dir', work, *data_options(small_data, SHORT))
    losses = [float(v) for v in re.findall(r'Iter\(train\).*? loss: ([\d.]+)', proc.stdout)]
    assert len(losses) >= 3 and losses[-1] < losses[0], losses  # logged every 10 iterations: the heads learn
    ckpt = open(work / 'last_checkpoint').read().strip()
    saved = load_ckpt(ckpt)['state_dict']
    for k, v in weights.items():
        assert torch.equal(saved[f'backbone.model.{k}'], v), f'frozen encoder weight {k} changed or not loaded'
    head_keys = [k for k in saved if k.startswith('decode_head.')]
    assert head_keys
    proc = run_tool('test.py', config, ckpt, '--work-dir', work, *data_options(small_data, SHORT))
    miou = miou_of(proc.stdout)
    print(f'tiny timm {recipe}: loss {losses}, mIoU {miou} after 30 iterations')
    assert 0 <= miou <= 100
