"""Issue 11: trained models (head + backbone) are built on the meta device and filled from the checkpoint,
in the config's dtype; the backbone's random init never runs (init_model, tools/test.py, tools/infer.py)."""
import os

import numpy as np
import pytest
import torch
from conftest import load_tool
from PIL import Image
from seg_utils import data_options, miou_of

from internvit_dense.apis import build_trained, init_model
from internvit_dense.checkpoint import CheckpointError
from internvit_dense.datasets.synthetic_ade20k import generate_synthetic_ade20k
from internvit_dense.models.backbones import InternViT

SEG = 'configs/segmentation/tiny/tiny_upernet_frozen_synthetic.py'
ADAPTER = 'configs/segmentation/tiny/tiny_adapter_upernet_frozen_synthetic.py'
pytestmark = pytest.mark.usefixtures('one_thread')


def _refuse(self):
    raise AssertionError('InternViT._random_init was called: the backbone was built with random weights')


@pytest.fixture
def no_random_init(monkeypatch):
    """Fails a test in which any InternViT is randomly initialised."""
    monkeypatch.setattr(InternViT, '_random_init', _refuse)


def save_training_checkpoint(config, path, **cfg_options):
    model = init_model(config, cfg_options=cfg_options or None)  # random weights (before the patch)
    torch.save(dict(meta=dict(dataset_meta=dict(model.dataset_meta)), state_dict=model.state_dict()), path)
    return model.state_dict()


@pytest.fixture(scope='module')
def seg_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp('trained') / 'iter_2.pth'
    return path, save_training_checkpoint(SEG, path)


@pytest.mark.parametrize('config', [SEG, ADAPTER])
def test_init_model_builds_the_backbone_from_the_checkpoint(tmp_path, config):
    saved = save_training_checkpoint(config, tmp_path / 'c.pth')
    with pytest.MonkeyPatch.context() as m:
        m.setattr(InternViT, '_random_init', _refuse)
        model = init_model(config, tmp_path / 'c.pth')
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved[k]), k


def test_training_checkpoint_in_the_configs_dtype(seg_ckpt, no_random_init):
    path, saved = seg_ckpt  # saved with an fp32 backbone
    model = init_model(SEG, path, cfg_options={'model.backbone.dtype': 'bfloat16'})
    vit = model.backbone
    for name, p in vit.named_parameters():
        want = torch.float32 if 'norm' in name else torch.bfloat16
        assert p.dtype == want, name
        assert torch.equal(p, saved[f'backbone.{name}'].to(want)), name
    assert model.decode_head.conv_seg.weight.dtype == torch.float32  # the head stays fp32
    x = torch.rand(1, 3, 64, 64) * 255
    out = model.test_step(dict(inputs=[x[0]], data_samples=None))[0]
    assert out.seg_logits.data.dtype == torch.float32


def test_bf16_checkpoint_assigned_without_a_copy(tmp_path):
    """A bf16 backbone in the file is taken as it lies in the (memory-mapped) file: no cast, no copy."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    model = init_model(SEG, cfg_options={'model.backbone.dtype': 'bfloat16'})
    torch.save(dict(state_dict=model.state_dict()), tmp_path / 'c.pth')
    cfg = Config.fromfile(SEG)
    cfg.model.backbone.dtype = 'bfloat16'
    init_default_scope('mmseg')
    with pytest.MonkeyPatch.context() as m:
        m.setattr(InternViT, '_random_init', _refuse)
        loaded, _ = build_trained(cfg.model, tmp_path / 'c.pth')
    qkv = loaded.backbone.blocks[0].attn.qkv.weight
    assert qkv.dtype == torch.bfloat16 and torch.equal(qkv, model.backbone.blocks[0].attn.qkv.weight)
    # the parameter lies in the file's memory mapping, not in an allocation of its own
    assert any(path == str(tmp_path / 'c.pth') and lo <= qkv.data_ptr() < hi for lo, hi, path in mapped_files())


def mapped_files():
    with open('/proc/self/maps') as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 6:
                lo, hi = (int(v, 16) for v in fields[0].split('-'))
                yield lo, hi, fields[5]


def test_errors_name_what_does_not_fit(seg_ckpt, tmp_path):
    path, saved = seg_ckpt
    partial = {k: v for k, v in saved.items() if not k.startswith('backbone.blocks.1.')}
    torch.save(dict(state_dict=partial), tmp_path / 'partial.pth')
    with pytest.raises(CheckpointError, match=r"does not fit the model: \d+ missing keys, e.g. \['backbone.blocks.1"):
        init_model(SEG, tmp_path / 'partial.pth')
    extra = dict(saved, **{'decode_head.extra.weight': torch.zeros(1)})
    torch.save(dict(state_dict=extra), tmp_path / 'extra.pth')
    with pytest.raises(CheckpointError, match=r"1 unexpected keys, e.g. \['decode_head.extra.weight'\]"):
        init_model(SEG, tmp_path / 'extra.pth')
    bad = dict(saved)
    bad['backbone.cls_token'] = torch.zeros(1, 1, 7)
    torch.save(dict(state_dict=bad), tmp_path / 'bad.pth')
    with pytest.raises(CheckpointError, match=r"'backbone.cls_token' has shape \(1, 1, 7\)"):
        init_model(SEG, tmp_path / 'bad.pth')


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('synthetic_ade20k_small')
    generate_synthetic_ade20k(str(root), num_train=2, num_val=3, seed=0, progress=False, overwrite=True)
    return root


def test_test_tool_never_random_inits_the_backbone(seg_ckpt, data_root, tmp_path, no_random_init, capsys):
    path, _ = seg_ckpt
    load_tool('test').main([SEG, str(path), '--work-dir', str(tmp_path / 'work'), *data_options(data_root),
                            'model.backbone.dtype=bfloat16'])
    assert miou_of(capsys.readouterr().out) >= 0


def test_infer_tool_never_random_inits_the_backbone(seg_ckpt, tmp_path, no_random_init, capsys):
    path, _ = seg_ckpt
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(tmp_path / 'a.png')
    load_tool('infer').main([SEG, str(path), str(tmp_path / 'a.png'), '--out-dir', str(tmp_path / 'out'), '--quiet',
                             '--cfg-options', 'model.backbone.dtype=bfloat16'])
    assert 'done: 1 images' in capsys.readouterr().out
    assert os.path.isfile(tmp_path / 'out' / 'a_labels.png')


LINEAR = 'configs/segmentation/tiny/tiny_linear_frozen_synthetic.py'


def test_training_fills_the_backbone_from_its_checkpoint_without_random_init(data_root, tmp_path, no_random_init):
    """Issue 19: tools/train.py with the backbone's init_cfg naming a checkpoint builds the InternViT on the
    meta device and fills it from that file (the 6B configs: minutes of random init per rank before)."""
    from mmengine.config import Config
    arch = Config.fromfile(LINEAR).model.backbone
    vit = InternViT(arch=arch.arch, img_size=arch.img_size, pretrain_size=arch.pretrain_size, device='meta')
    weights = {k: torch.randn(v.shape, generator=torch.Generator().manual_seed(i)) * 0.02
               for i, (k, v) in enumerate(vit.state_dict().items())}
    torch.save(weights, tmp_path / 'pretrained.pth')
    config = tmp_path / 'pretrained_linear.py'
    init_cfg = f"dict(_delete_=True, type='Pretrained', checkpoint='{tmp_path}/pretrained.pth')"
    config.write_text(f"_base_ = ['{os.path.abspath(LINEAR)}']\nmodel = dict(backbone=dict(init_cfg={init_cfg}))\n")
    load_tool('train').main([str(config), '--work-dir', str(tmp_path / 'work'), *data_options(data_root),
                             'train_cfg.max_iters=1', 'default_hooks.checkpoint.interval=1', 'val_dataloader=None',
                             'val_cfg=None', 'val_evaluator=None', 'train_dataloader.batch_size=1'])
    trained = torch.load(tmp_path / 'work' / 'iter_1.pth', map_location='cpu', weights_only=False)['state_dict']
    assert set(weights) == {k[len('backbone.'):] for k in trained if k.startswith('backbone.')}
    # frozen: trained one iteration, the backbone is the file's, bit for bit
    assert all(torch.equal(trained[f'backbone.{k}'], v) for k, v in weights.items())


def test_training_from_load_from_and_resume_never_random_inits_the_backbone(data_root, tmp_path, monkeypatch):
    """Issue 19: load_from / --resume with a backbone without a pretrained init_cfg: the InternViT is built on the
    meta device and filled from the training checkpoint the run loads (no random init, which at 6B is minutes)."""
    saved = save_training_checkpoint(LINEAR, tmp_path / 'start.pth')  # random weights (before the patch)
    monkeypatch.setattr(InternViT, '_random_init', _refuse)
    run = ['--work-dir', str(tmp_path / 'work'), *data_options(data_root), 'default_hooks.checkpoint.interval=1',
           'val_dataloader=None', 'val_cfg=None', 'val_evaluator=None', 'train_dataloader.batch_size=1']
    load_tool('train').main([LINEAR, *run, 'train_cfg.max_iters=1', f'load_from={tmp_path}/start.pth'])
    trained = torch.load(tmp_path / 'work' / 'iter_1.pth', map_location='cpu', weights_only=False)['state_dict']
    backbone = [k for k in saved if k.startswith('backbone.')]
    assert backbone and all(torch.equal(trained[k], saved[k]) for k in backbone)  # frozen: the file's, bit for bit
    assert not torch.equal(trained['decode_head.conv_seg.weight'], saved['decode_head.conv_seg.weight'])  # trained

    load_tool('train').main([LINEAR, *run, 'train_cfg.max_iters=2', '--resume'])
    resumed = torch.load(tmp_path / 'work' / 'iter_2.pth', map_location='cpu', weights_only=False)
    assert resumed['meta']['iter'] == 2 and all(torch.equal(resumed['state_dict'][k], saved[k]) for k in backbone)
