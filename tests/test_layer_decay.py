"""LayerDecayOptimWrapperConstructor: per-parameter lr / weight decay, frozen params, scopes, schedulers."""
import pytest
import torch
import torch.nn as nn
from mmengine.optim import AmpOptimWrapper, OptimWrapper, PolyLR, build_optim_wrapper
from mmengine.registry import DefaultScope

from internvit_dense.engine import LayerDecayOptimWrapperConstructor
from internvit_dense.engine import optimizers as layer_decay
from internvit_dense.models.backbones import InternViT

BASE_LR, WD, RATE, DEPTH = 4e-5, 0.05, 0.95, 4


def make_cfg(wrapper='OptimWrapper', **paramwise):
    return dict(type=wrapper,
                optimizer=dict(type='AdamW', lr=BASE_LR, betas=(0.9, 0.999), weight_decay=WD),
                constructor='LayerDecayOptimWrapperConstructor',
                paramwise_cfg=dict(dict(num_layers=DEPTH, layer_decay_rate=RATE), **paramwise))


class TinySegmentor(nn.Module):
    def __init__(self, depth=DEPTH, embed_dims=32, frozen=False):
        super().__init__()
        self.backbone = InternViT(arch=dict(embed_dims=embed_dims, depth=depth, num_heads=2 if embed_dims > 8 else 1),
                                  img_size=28, pretrain_size=28, frozen=frozen)
        self.decode_head = nn.Linear(embed_dims, 5)

    def loss(self):
        feats = self.backbone(torch.randn(2, 3, 28, 28))[-1]
        return self.decode_head(feats.mean((2, 3))).square().mean()


class Wrapped(nn.Module):
    """Stands in for (MM)DistributedDataParallel: the model sits at `.module`."""

    def __init__(self, model):
        super().__init__()
        self.module = model


def expected_layer_id(name, depth):
    # Derived from the name by hand, independently of the constructor's regex.
    parts = name.split('.')
    while parts[0] == 'module':
        parts = parts[1:]
    if parts[0] != 'backbone':
        return depth + 1
    if parts[1] in ('cls_token', 'pos_embed', 'patch_embed'):
        return 0
    if parts[1] == 'blocks':
        return int(parts[2]) + 1
    return depth + 1


def expected_wd(name, param, extra_no_decay=()):
    parts = name.split('.')
    if param.ndim == 1 or parts[-1] in ('cls_token', 'pos_embed') or any(k in parts for k in extra_no_decay):
        return 0.0
    return WD


def groups_by_param(optim_wrapper):
    found = {}
    for group in optim_wrapper.optimizer.param_groups:
        for p in group['params']:
            assert id(p) not in found, 'a parameter is in two param groups'
            found[id(p)] = group
    return found


def assert_layer_decay(model, optim_wrapper, depth=DEPTH, extra_no_decay=()):
    groups = groups_by_param(optim_wrapper)
    trainable = 0
    for name, p in model.named_parameters():
        if not p.requires_grad:
            assert id(p) not in groups, f'frozen {name} is in the optimizer'
            continue
        trainable += 1
        group = groups[id(p)]
        lr = BASE_LR * RATE ** (depth + 1 - expected_layer_id(name, depth))
        assert group['lr'] == pytest.approx(lr, rel=1e-12), name
        assert group['weight_decay'] == expected_wd(name, p, extra_no_decay), name
    assert len(groups) == trainable  # nothing but the model's trainable params


@pytest.fixture
def logs(monkeypatch):
    messages = []
    monkeypatch.setattr(layer_decay, 'print_log', lambda msg, *args, **kwargs: messages.append(msg))
    return messages


@pytest.mark.parametrize('num_layers', [DEPTH, None])
def test_every_parameter_gets_its_layer_lr_and_weight_decay(num_layers, logs):
    model = TinySegmentor()
    cfg = make_cfg()
    if num_layers is None:  # then it comes from model.backbone.depth
        del cfg['paramwise_cfg']['num_layers']
    optim_wrapper = build_optim_wrapper(model, cfg)
    assert type(optim_wrapper) is OptimWrapper
    assert_layer_decay(model, optim_wrapper)

    # A few spot checks of the rule itself.
    groups = groups_by_param(optim_wrapper)
    params = dict(model.named_parameters())
    assert groups[id(params['decode_head.weight'])]['lr'] == pytest.approx(BASE_LR)
    assert groups[id(params['backbone.blocks.3.attn.qkv.weight'])]['lr'] == pytest.approx(BASE_LR * RATE)
    assert groups[id(params['backbone.blocks.0.mlp.fc1.weight'])]['lr'] == pytest.approx(BASE_LR * RATE ** 4)
    assert groups[id(params['backbone.patch_embed.proj.weight'])]['lr'] == pytest.approx(BASE_LR * RATE ** 5)
    for name in ('backbone.cls_token', 'backbone.pos_embed', 'backbone.blocks.1.ls1.gamma',
                 'backbone.blocks.1.norm1.weight', 'decode_head.bias'):
        assert groups[id(params[name])]['weight_decay'] == 0.0
    assert groups[id(params['backbone.patch_embed.proj.weight'])]['weight_decay'] == WD

    # The summary table has one row per layer id: embed, 4 blocks, neck/heads.
    table = logs[-1].splitlines()
    assert len(table) == 2 + DEPTH + 2 and 'neck/heads' in table[-1]


def test_param_groups_are_few_and_full_lr_first():
    optim_wrapper = build_optim_wrapper(TinySegmentor(), make_cfg())
    groups = optim_wrapper.optimizer.param_groups
    assert len(groups) == 2 * (DEPTH + 2)  # (decay, no decay) per layer id
    # mmengine logs param_groups[0]['lr'] as the run's lr.
    assert groups[0]['lr'] == pytest.approx(BASE_LR) and groups[0]['weight_decay'] == WD

    deep = TinySegmentor(depth=48, embed_dims=8)
    optim_wrapper = build_optim_wrapper(deep, make_cfg(num_layers=48))
    assert len(optim_wrapper.optimizer.param_groups) == 2 * (48 + 2)
    assert_layer_decay(deep, optim_wrapper, depth=48)


def test_frozen_backbone_leaves_only_head_params(logs):
    model = TinySegmentor(frozen=True)
    optim_wrapper = build_optim_wrapper(model, make_cfg())
    in_optimizer = {id(p) for g in optim_wrapper.optimizer.param_groups for p in g['params']}
    assert in_optimizer == {id(p) for p in model.decode_head.parameters()}
    assert_layer_decay(model, optim_wrapper)
    assert any('requires_grad=False' in m for m in logs)

    # A training step moves the head only.
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optim_wrapper.update_params(model.loss())
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]) == name.startswith('backbone.'), name


def test_model_without_trainable_params_is_an_error():
    model = TinySegmentor(frozen=True)
    model.decode_head.requires_grad_(False)
    with pytest.raises(ValueError, match='no trainable parameter'):
        build_optim_wrapper(model, make_cfg())


def test_wrapped_model():
    model = TinySegmentor()
    wrapped = Wrapped(Wrapped(model))
    assert next(iter(dict(wrapped.named_parameters()))).startswith('module.module.backbone.')
    optim_wrapper = build_optim_wrapper(wrapped, make_cfg())
    assert_layer_decay(wrapped, optim_wrapper)


def test_model_without_backbone_uses_base_lr(logs):
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    optim_wrapper = build_optim_wrapper(model, make_cfg())
    groups = optim_wrapper.optimizer.param_groups
    assert all(g['lr'] == BASE_LR for g in groups)
    assert sorted(g['weight_decay'] for g in groups) == [0.0, WD]  # weights vs biases / norm
    assert any('no `backbone`' in m for m in logs)


def test_no_decay_names():
    model = TinySegmentor()
    optim_wrapper = build_optim_wrapper(model, make_cfg(no_decay_names=['decode_head']))
    assert_layer_decay(model, optim_wrapper, extra_no_decay=('decode_head',))


@pytest.mark.parametrize('scope', ['mmseg', 'mmdet'])
def test_builds_in_downstream_scopes(scope):
    registry = __import__(f'{scope}.registry', fromlist=['OPTIM_WRAPPER_CONSTRUCTORS']).OPTIM_WRAPPER_CONSTRUCTORS
    # Registered in the scope itself, not only reachable through mmengine's parent registry.
    assert registry.module_dict['LayerDecayOptimWrapperConstructor'] is LayerDecayOptimWrapperConstructor
    model = TinySegmentor()
    with DefaultScope.overwrite_default_scope(scope):
        optim_wrapper = build_optim_wrapper(model, make_cfg())
    assert_layer_decay(model, optim_wrapper)


def test_poly_lr_keeps_the_ratio_between_groups():
    optim_wrapper = build_optim_wrapper(TinySegmentor(), make_cfg())
    groups = optim_wrapper.optimizer.param_groups
    start = [g['lr'] for g in groups]
    scheduler = PolyLR(optim_wrapper, power=1.0, eta_min=0.0, begin=0, end=10, by_epoch=False)
    for _ in range(3):
        optim_wrapper.step()
        scheduler.step()
    assert [g['initial_lr'] for g in groups] == start
    factors = [g['lr'] / lr0 for g, lr0 in zip(groups, start)]
    assert factors[0] < 1
    assert factors == pytest.approx([factors[0]] * len(factors), rel=1e-9)


@pytest.mark.filterwarnings('ignore:.*GradScaler')  # it disables itself without CUDA
def test_amp_optim_wrapper(monkeypatch):
    # AmpOptimWrapper refuses to build without an accelerator; the constructor only has to pass it through.
    from mmengine.optim.optimizer import amp_optimizer_wrapper
    monkeypatch.setattr(amp_optimizer_wrapper, 'is_cuda_available', lambda: True)
    model = TinySegmentor()
    cfg = make_cfg('AmpOptimWrapper')
    cfg['loss_scale'] = 'dynamic'
    optim_wrapper = build_optim_wrapper(model, cfg)
    assert isinstance(optim_wrapper, AmpOptimWrapper)
    assert_layer_decay(model, optim_wrapper)


@pytest.mark.parametrize('paramwise, error, match', [
    (dict(num_layers=DEPTH), KeyError, 'layer_decay_rate'),
    (dict(layer_decay_rate=RATE, layer_decay=RATE), KeyError, 'layer_decay'),
    (dict(num_layers=48, layer_decay_rate=RATE), ValueError, 'depth=4'),
    (dict(layer_decay_rate=0), ValueError, 'positive'),
])
def test_config_errors(paramwise, error, match):
    cfg = make_cfg()
    cfg['paramwise_cfg'] = paramwise
    with pytest.raises(error, match=match):
        build_optim_wrapper(TinySegmentor(), cfg)
