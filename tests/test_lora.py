"""Issue 23: low-rank adapters (peft LoRA) on a frozen InternViT: what trains, what the model computes at
initialisation and after merging, gradients through checkpointed blocks, layer decay, adapters-only checkpoints."""
import pytest
import torch
import torch.utils.checkpoint as cp
from conftest import TINY_6B, TINY_300M, randomize_, tiny_vit

from internvit_dense.checkpoint import CheckpointError, save_checkpoint
from internvit_dense.models.backbones import InternViT
from internvit_dense.models.backbones.lora import lora_layers, merge_lora

pytest.importorskip('peft')
pytestmark = pytest.mark.usefixtures('one_thread')

LORA = dict(rank=4, alpha=8, dropout=0.05)
TARGETS = ('attn.qkv', 'attn.proj', 'mlp.fc1', 'mlp.fc2')


def pretrained(tmp_path, arch=TINY_6B, seed=0, name='vit.pth'):
    """A tiny InternViT saved as a pretrained file (OpenGVLab .pth names)."""
    vit = tiny_vit(arch, seed=seed)
    path = tmp_path / name
    save_checkpoint(vit, str(path))
    return vit, str(path)


def lora_vit(path, arch=TINY_6B, lora=LORA, **kwargs):
    kwargs.setdefault('patch_size', 14)
    kwargs.setdefault('pretrain_size', 56)
    kwargs.setdefault('img_size', 56)
    vit = InternViT(arch=dict(arch), lora=dict(lora), init_cfg=dict(type='Pretrained', checkpoint=path), **kwargs)
    vit.init_weights()
    return vit


def randomize_adapters_(vit, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in vit.named_parameters():
            if 'lora_' in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return vit


@pytest.mark.parametrize('arch', [TINY_6B, TINY_300M])
@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
def test_adapters_alone_train_and_start_as_the_frozen_model(tmp_path, arch, dtype):
    base, path = pretrained(tmp_path, arch)
    frozen = InternViT(arch=dict(arch), img_size=56, pretrain_size=56, frozen=True, dtype=dtype, out_indices=[1, 3],
                       init_cfg=dict(type='Pretrained', checkpoint=path))
    frozen.init_weights()
    vit = lora_vit(path, arch, dtype=dtype, out_indices=[1, 3], drop_path_rate=0.1)

    names = [n for n, p in vit.named_parameters() if p.requires_grad]
    assert names and all('.lora_A.' in n or '.lora_B.' in n for n in names)
    assert len(lora_layers(vit)) == 4 * arch['depth']
    # the pretrained names keep their paths (peft's base_layer inside), the adapters are fp32 over the base dtype
    assert vit.blocks[2].attn.qkv.base_layer.weight.dtype == getattr(torch, dtype)
    assert vit.blocks[2].attn.qkv.lora_A['default'].weight.dtype == torch.float32
    assert torch.equal(vit.blocks[2].mlp.fc1.base_layer.weight, frozen.blocks[2].mlp.fc1.weight)

    x = torch.randn(2, 3, 56, 56)
    vit.eval()
    for got, want in zip(vit(x), frozen(x)):  # peft's lora_B starts at zero: exactly the frozen model
        assert torch.equal(got, want)


def test_gradients_reach_the_adapters_through_checkpointed_blocks(tmp_path, monkeypatch):
    _, path = pretrained(tmp_path)
    calls = []
    real = cp.checkpoint

    def counting(fn, *args, **kwargs):
        calls.append(fn)
        return real(fn, *args, **kwargs)

    grads = {}
    for with_cp in (True, False):
        torch.manual_seed(0)
        vit = randomize_adapters_(lora_vit(path, with_cp=with_cp, out_indices=[1, 3]))
        vit.train()
        monkeypatch.setattr(cp, 'checkpoint', counting)
        x = torch.randn(2, 3, 56, 56)
        sum(f.square().mean() for f in vit(x)).backward()
        grads[with_cp] = {n: p.grad for n, p in vit.named_parameters() if p.requires_grad}
        assert all(p.grad is None for p in vit.parameters() if not p.requires_grad)
    assert len(calls) == 4  # every block ran checkpointed with with_cp, although the tokens need no gradient
    for name, g in grads[True].items():
        assert g is not None and bool(torch.isfinite(g).all()) and g.abs().sum() > 0, name
        torch.testing.assert_close(g, grads[False][name], rtol=1e-5, atol=1e-7)


def test_drop_path_and_adapter_dropout_are_on_in_training(tmp_path):
    _, path = pretrained(tmp_path)
    vit = randomize_adapters_(lora_vit(path, drop_path_rate=0.3)).train()
    assert vit.training and vit.blocks[3].drop_path.training
    x = torch.randn(2, 3, 56, 56)
    assert not torch.equal(vit(x)[0], vit(x)[0])  # random masks differ from call to call
    vit.eval()
    assert torch.equal(vit(x)[0], vit(x)[0])


@pytest.mark.parametrize('dtype, float32, tol', [
    ('float32', False, 1e-5),   # fp32 base: merged in fp32
    ('bfloat16', True, 1e-5),   # bf16 base widened to fp32, then merged: the merge is not rounded
    ('bfloat16', False, 3e-2),  # bf16 base merged in bf16: W + BA rounded to bf16 (8 mantissa bits)
])
def test_merged_equals_unmerged(tmp_path, dtype, float32, tol):
    _, path = pretrained(tmp_path)
    vit = randomize_adapters_(lora_vit(path, dtype=dtype, out_indices=[1, 3])).eval()
    x = torch.randn(2, 3, 56, 56)
    if float32:
        vit.float()  # compared in the precision the merged model computes in
    before = vit(x)
    assert merge_lora(vit, float32) == 16
    assert not lora_layers(vit) and vit.lora is None
    assert not any('lora_' in k or 'base_layer' in k for k in vit.state_dict())
    after = vit(x)
    for a, b in zip(after, before):
        err = ((a - b).abs().max() / b.abs().max()).item()
        print(f'{dtype} base, merged in {"float32" if float32 else dtype}: '
              f'max |merged - unmerged| / max |unmerged| = {err:.2e}')
        assert err < tol
    # the merged backbone loads into a plain InternViT (no lora) under the released names
    merged = tmp_path / 'merged.pth'
    save_checkpoint(vit, str(merged))
    plain = InternViT(arch=dict(TINY_6B), img_size=56, pretrain_size=56, out_indices=[1, 3],
                      dtype='float32' if float32 else dtype)
    plain.load_pretrained(str(merged))
    for a, b in zip(plain.eval()(x), after):
        assert torch.equal(a, b)


def test_layer_decay_groups_keep_the_block_of_each_adapter(tmp_path):
    _, path = pretrained(tmp_path)
    vit = lora_vit(path)
    for name, _ in vit.named_parameters():
        depth, layers = vit.get_layer_depth(f'backbone.{name}', prefix='backbone.')
        if name.startswith('blocks.'):
            assert depth == int(name.split('.')[1]) + 1
        assert layers == 6


def test_blocks_and_targets_select_the_adapted_layers(tmp_path):
    _, path = pretrained(tmp_path)
    vit = lora_vit(path, lora=dict(rank=2, targets=['attn.qkv'], blocks=[-1, 1]))
    assert sorted(n for n, _ in lora_layers(vit)) == ['blocks.1.attn.qkv', 'blocks.3.attn.qkv']
    assert vit.lora.settings == dict(rank=2, alpha=4, dropout=0.0, targets=['attn.qkv'], blocks=[1, 3])
    with pytest.raises(ValueError, match=r"lora.targets \['mlp.fc3'\] match no linear layer"):
        lora_vit(path, lora=dict(rank=2, targets=['attn.qkv', 'mlp.fc3']))
    with pytest.raises(ValueError, match='unknown keys'):
        lora_vit(path, lora=dict(r=2))
    with pytest.raises(ValueError, match='set frozen=False with lora'):
        InternViT(arch=dict(TINY_6B), frozen=True, lora=dict(rank=2))


def test_checkpoint_holds_the_adapters_and_checks_its_base(tmp_path):
    _, path = pretrained(tmp_path)
    vit = randomize_adapters_(lora_vit(path))
    sd = vit.state_dict()
    adapters = [k for k in sd if 'lora_' in k]
    assert sorted(sd) == sorted(adapters + ['lora._extra_state'])
    record = sd['lora._extra_state']
    assert record['adapters_only'] and record['base_path'] == path and record['base']['files'][0][1] > 0

    # the same base under another name: accepted (size and content identify it)
    copy = tmp_path / 'copy.pth'
    copy.write_bytes(open(path, 'rb').read())
    again = lora_vit(str(copy))
    again.load_state_dict(sd)
    x = torch.randn(1, 3, 56, 56)
    assert torch.equal(again.eval()(x)[0], vit.eval()(x)[0])

    # another base: refused, naming both files, whether the base loads before or after the adapters
    _, other = pretrained(tmp_path, seed=5, name='other.pth')
    wrong = lora_vit(other)
    with pytest.raises(CheckpointError, match=r'wrong base weights .* trained over .*vit.pth .* pretrained file is .*other.pth'):
        wrong.load_state_dict(sd)
    with torch.device('meta'):
        late = InternViT(arch=dict(TINY_6B), img_size=56, pretrain_size=56, lora=dict(LORA),
                         init_cfg=dict(type='Pretrained', checkpoint=other))
    late.load_state_dict(sd, assign=True)
    with pytest.raises(CheckpointError, match='wrong base weights'):
        late.init_weights()

    # the adapters of another rank, or a config without a pretrained file: refused
    with pytest.raises(CheckpointError, match='use the config the checkpoint was trained with'):
        lora_vit(path, lora=dict(LORA, rank=8)).load_state_dict(sd)
    bare = InternViT(arch=dict(TINY_6B), img_size=56, pretrain_size=56, lora=dict(LORA))
    with pytest.raises(CheckpointError, match='has no pretrained file'):
        bare.load_state_dict(sd)
    assert any('base_layer' in k for k in bare.state_dict())  # no pretrained file: the base is saved too


SIX_B_LORA = ['segmentation/internvit_6b_upernet_lora_ade20k_504', 'segmentation/internvit_6b_upernet_lora_ade20k_504_deepspeed',
              'segmentation/internvit_6b_adapter_upernet_lora_ade20k_504',
              'segmentation/internvit_6b_linear_lora_ade20k_504_1of16_5k',
              'segmentation/internvit_6b_linear_lora_ade20k_504_1of1_80k',
              'detection/internvit_6b_sfp_mask-rcnn_fpn_lora_1x_coco']
ADAPTER_PARAMS_6B = 48 * 16 * (3200 + 9600 + 3200 + 3200 + 3200 + 12800 + 12800 + 3200)  # r * (in + out) per linear


@pytest.mark.parametrize('name', SIX_B_LORA)
def test_6b_lora_configs_build_on_meta(name):
    """The 6B LoRA configs: bf16 base frozen, the adapters (rank 16 on the four linears of all 48 blocks: 39.3M,
    fp32) and the neck/heads train; checkpoints are adapters-only (the base comes from the pretrained file)."""
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope

    import internvit_dense.models  # noqa: F401
    cfg = Config.fromfile(f'configs/{name}.py')
    init_default_scope(cfg.default_scope)
    with torch.device('meta'):
        model = MODELS.build(cfg.model)
    vit = getattr(model.backbone, 'vit', model.backbone)
    assert vit.lora.adapters_only and vit.lora.settings['rank'] == 16
    trained = {n: p for n, p in vit.named_parameters() if p.requires_grad}
    assert all('.lora_' in n for n in trained) and all(p.dtype == torch.float32 for p in trained.values())
    assert sum(p.numel() for p in trained.values()) == ADAPTER_PARAMS_6B == 39_321_600
    assert vit.blocks[0].attn.qkv.base_layer.weight.dtype == torch.bfloat16
    heads = [n for n, p in model.named_parameters() if p.requires_grad and not n.startswith('backbone.')]
    assert heads and vit.with_cp and not vit.frozen
    assert cfg.optim_wrapper.paramwise_cfg.layer_decay_rate == 1.0


@pytest.mark.parametrize('config', ['segmentation/tiny/tiny_upernet_lora_synthetic',
                                    'segmentation/tiny/tiny_adapter_upernet_lora_synthetic',
                                    'segmentation/tiny/tiny_linear_lora_fewshot_synthetic',
                                    'segmentation/tiny/tiny_linear_lora_synthetic',
                                    'detection/tiny/tiny_mask-rcnn_fpn_lora_synthetic'])
def test_tiny_lora_configs_take_a_training_step(config):
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope

    import internvit_dense.models  # noqa: F401
    cfg = Config.fromfile(f'configs/{config}.py')
    init_default_scope(cfg.default_scope)
    model = MODELS.build(cfg.model).train()
    vit = getattr(model.backbone, 'vit', model.backbone)
    assert not vit.lora.adapters_only  # no pretrained file in the tiny configs: checkpoints keep the base
    assert all('.lora_' in n for n, p in vit.named_parameters() if p.requires_grad)
    if cfg.default_scope == 'mmseg':
        from mmengine.structures import PixelData
        from mmseg.structures import SegDataSample
        h, w = cfg.model.data_preprocessor.size
        samples = [SegDataSample(gt_sem_seg=PixelData(data=torch.randint(0, 150, (1, h, w)))) for _ in range(2)]
        for sample in samples:
            sample.set_metainfo(dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w)))
        loss = model.parse_losses(model(torch.randn(2, 3, h, w), samples, mode='loss'))[0]
    else:
        loss = sum(f.square().mean() for f in model.extract_feat(torch.randn(2, 3, 160, 160)))
    loss.backward()
    grads = [p.grad for n, p in vit.named_parameters() if '.lora_B.' in n]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for n, p in vit.named_parameters() if '.lora_' not in n)


def test_deepspeed_zero3_is_refused_and_zero2_saves_adapters_only():
    from mmengine.config import Config

    from internvit_dense.engine.deepspeed import apply_deepspeed_options, prepare_deepspeed
    from internvit_dense.memory_plan import apply_overrides
    cfg = Config.fromfile('configs/segmentation/internvit_6b_upernet_lora_ade20k_504_deepspeed.py')
    prepare_deepspeed(cfg)
    assert cfg.strategy.zero_optimization.stage == 2 and cfg.strategy.exclude_frozen_parameters is True
    cfg = Config.fromfile('configs/segmentation/internvit_6b_upernet_lora_ade20k_504.py')
    with pytest.raises(ValueError, match='ZeRO-3 is not supported with LoRA \\(model.backbone.lora\\)'):
        apply_overrides(cfg, deepspeed=3, precision='bf16')
    cfg = Config.fromfile('configs/segmentation/tiny/tiny_adapter_upernet_lora_synthetic.py')
    apply_deepspeed_options(cfg, dict(zero_optimization=dict(stage=3)))
    with pytest.raises(ValueError, match='model.backbone.vit.lora'):
        prepare_deepspeed(cfg)


def test_timm_encoder_takes_lora(tmp_path):
    """The same switch on a timm ViT (TimmEncoder): its linears carry InternViT's names."""
    import timm

    from internvit_dense.models.backbones import TimmEncoder
    kw = dict(depth=2, embed_dim=32, num_heads=2)
    torch.save(timm.create_model('vit_tiny_patch16_224', pretrained=False, num_classes=0, img_size=64, **kw)
               .state_dict(), tmp_path / 'timm.pth')
    common = dict(model_name='vit_tiny_patch16_224', checkpoint=str(tmp_path / 'timm.pth'), img_size=64,
                  model_kwargs=kw)
    plain, enc = TimmEncoder(frozen=True, **common), TimmEncoder(lora=dict(rank=2), **common)
    plain.init_weights()
    enc.init_weights()
    assert all('.lora_' in n for n, p in enc.named_parameters() if p.requires_grad)
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(enc.eval()(x)[0], plain.eval()(x)[0])
    sd = enc.state_dict()
    assert sorted(sd) == sorted(k for k in sd if '.lora_' in k or k == 'lora._extra_state')
    assert enc.get_layer_depth('backbone.model.blocks.1.attn.qkv.lora_A.default.weight', 'backbone.') == (2, 4)
    enc.train()
    enc(x)[0].square().mean().backward()
    assert all(p.grad is not None for n, p in enc.named_parameters() if '.lora_B.' in n)


def test_hf_encoder_takes_lora(tmp_path):
    """The same switch on a transformers encoder (HFEncoder), with the model's own module names: a tiny DINOv2 built
    from a config and saved as save_pretrained writes it (no hub). Adapters alone train, start as the frozen model,
    take gradients, save without the base weights, load back over the same folder only, and merge."""
    from transformers import Dinov2Config, Dinov2Model

    from internvit_dense.models.backbones import HFEncoder
    folders = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                         intermediate_size=64, patch_size=14, image_size=56))
        model.save_pretrained(str(tmp_path / f'dinov2_{seed}'))
        folders.append(str(tmp_path / f'dinov2_{seed}'))
    # transformers 5 names DINOv2's linears attention.{q,k,v,o}_proj, mlp.fc1, mlp.fc2; only the last block adapted
    lora = dict(rank=2, alpha=4, targets=['attention.q_proj', 'attention.v_proj', 'mlp.fc1', 'mlp.fc2'], blocks=[-1])
    plain = HFEncoder(folders[0], frozen=True, out_indices=[0, 1])
    enc = HFEncoder(folders[0], lora=lora, out_indices=[0, 1])
    trained = sorted(n for n, p in enc.named_parameters() if p.requires_grad)
    assert len(trained) == 8 and all('encoder.layer.1.' in n and '.lora_' in n for n in trained)
    assert enc.get_layer_depth('backbone.model.encoder.layer.1.mlp.fc1.lora_A.default.weight', 'backbone.') == (2, 4)
    x = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        reference = [m.clone() for m in plain(x)]
        assert all(torch.equal(a, b) for a, b in zip(enc.eval()(x), reference))
    enc.train()
    enc(x)[1].square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in enc.named_parameters() if '.lora_B.' in n)

    randomize_adapters_(enc)
    sd = enc.state_dict()
    assert sorted(sd) == sorted(k for k in sd if '.lora_' in k or k == 'lora._extra_state') and len(sd) == 9
    with torch.no_grad():
        adapted = [m.clone() for m in enc.eval()(x)]
    assert not torch.allclose(adapted[1], reference[1])
    again = HFEncoder(folders[0], lora=lora, out_indices=[0, 1])
    again.load_state_dict(sd)  # strict: the base weights are the folder's, not missing
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(again.eval()(x), adapted))
    with pytest.raises(CheckpointError, match='wrong base weights') as err:
        HFEncoder(folders[1], lora=lora, out_indices=[0, 1]).load_state_dict(sd)
    assert 'dinov2_0' in str(err.value) and 'dinov2_1' in str(err.value)

    assert merge_lora(enc.model) == 4 and not any('lora' in n for n, _ in enc.model.named_parameters())
    with torch.no_grad():
        merged = enc.eval()(x)
    torch.testing.assert_close(merged[1], adapted[1], rtol=1e-5, atol=1e-5)
