"""The recipe's classifier for the mmengine runner: its head, its feature, its checkpoints, its config."""
import os

import pytest
import torch
from conftest import TINY_6B, tiny_vit
from mmengine.config import Config
from mmengine.registry import MODELS
from mmengine.runner.checkpoint import load_state_dict
from mmengine.structures import BaseDataElement

import internvit_dense.models  # noqa: F401  (registers InternViT and LinearProbeClassifier)
from internvit_dense.checkpoint import save_checkpoint
from internvit_dense.models.classifiers import LinearProbeClassifier, block_tokens, count_trainable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARCH = dict(TINY_6B)  # the project's tiny architecture


pytestmark = pytest.mark.usefixtures('one_thread')


def tiny_classifier(**kwargs):
    backbone = dict(type='InternViT', arch=ARCH, img_size=28, pretrain_size=28, patch_size=14)
    backbone.update(kwargs.pop('backbone', {}))
    return LinearProbeClassifier(backbone=backbone, num_classes=7, **kwargs)


def test_6b_recipe_config():
    cfg = Config.fromfile(os.path.join(ROOT, 'configs/classification/internvit_6b_linear_probe_in1k.py'))
    with torch.device('meta'):  # the real 6B model, without allocating 24 GB
        model = MODELS.build(cfg.model)
    # InternVL's head: BatchNorm(6400) with scale and shift + Linear(6400 -> 1000)
    assert count_trainable(model) == 6_400_000 + 1000 + 2 * 6400
    assert model.head.fc.in_features == 6400 and model.blocks == [47]
    assert model.head.bn.eps == 1e-6 and model.head.bn.affine
    assert all(not p.requires_grad for p in model.backbone.parameters()) and model.backbone.frozen
    assert not model.save_backbone  # head-only checkpoints for a pretrained, frozen backbone
    opt = cfg.optim_wrapper
    assert opt.type == 'AmpOptimWrapper' and opt.optimizer.type == 'SGD' and opt.optimizer.weight_decay == 0
    assert opt.optimizer.lr == 0.1 and cfg.auto_scale_lr == dict(enable=True, base_batch_size=512)
    assert cfg.train_dataloader.batch_size == 128 and cfg.train_cfg.max_epochs == 10
    warmup, cosine = cfg.param_scheduler
    assert (warmup.type, warmup.end, cosine.type, cosine.begin, cosine.end) == ('LinearLR', 1, 'CosineAnnealingLR',
                                                                                 1, 10)
    train_types = [t['type'] for t in cfg.train_dataloader.dataset.pipeline]
    test_types = [t['type'] for t in cfg.val_dataloader.dataset.pipeline]
    assert train_types[1:3] == ['RandomResizedCrop', 'RandomFlip']
    assert test_types[1:3] == ['ResizeShortEdge', 'CenterCrop']
    assert cfg.val_dataloader.dataset.pipeline[2].crop_size == 224


def test_feature_modes_and_frozen_backbone():
    model = tiny_classifier(n_last_blocks=2, avgpool=True)
    model.backbone.load_state_dict(tiny_vit(ARCH, img_size=28, pretrain_size=28).state_dict())
    x = torch.randn(4, 3, 28, 28)
    (p0, c0), (p1, c1) = model.backbone.get_intermediate_layers(x, n=2, return_class_token=True)
    torch.testing.assert_close(model.extract_feat(x), torch.cat([c0, c1, p1.mean(1)], 1))
    assert [t[0].shape for t in block_tokens(model.backbone, x, [1])] == [(4, ARCH['embed_dims'])]
    samples = [BaseDataElement(gt_label=torch.tensor([i % 7])) for i in range(4)]
    model.train()
    assert not model.backbone.training  # frozen stays in eval mode
    loss = model(x, samples, mode='loss')['loss']
    loss.backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert model.head.fc.weight.grad is not None
    model.eval()
    preds = model(x, samples, mode='predict')
    assert preds[0].pred_score.shape == (7,) and torch.allclose(preds[0].pred_score.sum(), torch.tensor(1.0))
    assert model(x).shape == (4, 7)
    with pytest.raises(ValueError):
        tiny_classifier(n_last_blocks=ARCH['depth'] + 1)  # more blocks than the backbone has
    with pytest.raises(ValueError, match='Pretrained'):
        tiny_classifier(save_backbone=False)


def test_head_only_checkpoints_reload_the_pretrained_backbone(tmp_path):
    vit = tiny_vit(ARCH, img_size=28, pretrain_size=28)
    save_checkpoint(vit, str(tmp_path / 'vit.pth'))
    pretrained = dict(init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'vit.pth')))
    trained = tiny_classifier(backbone=pretrained)
    trained.init_weights()
    with torch.no_grad():
        trained.head.fc.weight.normal_()
        trained.head.bn.running_mean.uniform_()
    sd = trained.state_dict()
    assert sd and not any(k.startswith('backbone.') for k in sd)
    assert set(sd) == {'head.bn.running_mean', 'head.bn.running_var', 'head.bn.num_batches_tracked', 'head.fc.weight',
                       'head.fc.bias'}

    fresh = tiny_classifier(backbone=pretrained)  # random backbone until something loads it
    x = torch.randn(2, 3, 28, 28)
    trained.eval(), fresh.eval()
    assert not torch.allclose(fresh(x), trained(x))
    load_state_dict(fresh, sd, strict=True)  # as tools/test.py loads: strict, and it must not complain
    torch.testing.assert_close(fresh(x), trained(x))

    # A backbone that cannot be rebuilt (no pretrained checkpoint) is saved with the head.
    random_backbone = tiny_classifier()
    assert any(k.startswith('backbone.') for k in random_backbone.state_dict())
