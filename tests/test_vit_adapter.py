"""InternViTAdapter (ViT-Adapter around InternViT): shapes, geometry, deformable attention, gradients,
frozen ViT, activation checkpointing, configs, checkpoint loading and layer decay."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope

import internvit_dense.datasets  # noqa: F401
import internvit_dense.models  # noqa: F401
from internvit_dense.checkpoint import save_checkpoint
from internvit_dense.models.backbones import InternViT
from internvit_dense.models.backbones import InternViTAdapter, deform_inputs
from internvit_dense.models.backbones.vit_adapter import (Level, check_interaction_indexes, default_interaction_indexes,
                                                      resample)

TINY_VIT = dict(arch=dict(embed_dims=32, depth=4, num_heads=2, mlp_dims=64), img_size=56, pretrain_size=56)
TINY_ADAPTER = dict(num_heads=2, conv_inplanes=8, extra_extractors=2)  # values 32 * 0.5 = 16 -> 8 per head
CONFIG_6B = 'configs/segmentation/internvit_6b_adapter_upernet_frozen_ade20k_504.py'
CONFIG_6B_448 = 'configs/segmentation/internvit_6b_448_adapter_upernet_frozen_ade20k_504.py'
CONFIG_6B_FULL = 'configs/segmentation/internvit_6b_adapter_upernet_full_ade20k_504.py'
CONFIG_TINY = 'configs/segmentation/tiny/tiny_adapter_upernet_frozen_synthetic.py'


@pytest.fixture(autouse=True, scope='module')
def _one_thread():
    # On the shared 2-core machines OpenMP threads spin against each other: these tiny ops
    # run ~50x faster on one thread.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_adapter(frozen=False, seed=0, **kwargs):
    torch.manual_seed(seed)
    return InternViTAdapter(vit=dict(TINY_VIT, frozen=frozen), **dict(TINY_ADAPTER, **kwargs))


def loss_of(outs):
    return sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in outs)


# ------------------------------------------------------------------ shapes and geometry
@pytest.mark.parametrize('size', [(112, 112), (98, 126), (150, 100), (14, 30), (56, 57)])
def test_four_maps_at_strides_4_to_32(size):
    model = tiny_adapter().eval()
    H, W = size
    with torch.no_grad():
        outs = model(torch.randn(2, 3, H, W))
    # ceil: the spatial prior's stride-2 convs (3x3, padding 1) and max-pool round up
    assert [tuple(o.shape) for o in outs] == [(2, 32, math.ceil(H / s), math.ceil(W / s)) for s in (4, 8, 16, 32)]
    assert all(torch.isfinite(o).all() for o in outs)


def test_reference_points_follow_the_image_not_the_grid_extent():
    vit = Level(2, 3, 14)  # a 28 x 42 image region (image pixels past 42 are not in the ViT)
    levels = [Level(4, 6, 8), Level(2, 3, 16), Level(1, 2, 32)]
    inject = deform_inputs([vit], levels)
    assert inject.reference_points.shape == (1, 6, 3, 2)
    assert inject.spatial_shapes.tolist() == [[4, 6], [2, 3], [1, 2]]
    assert inject.level_start_index.tolist() == [0, 24, 30]
    # token (row 1, col 2) covers image pixels [14, 28) x [28, 42): centre (x, y) = (35, 21);
    # on a stride-s level of h x w pixels that is (35 / (s * w), 21 / (s * h))
    for k, (h, w, s) in enumerate(levels):
        assert inject.reference_points[0, 5, k].tolist() == pytest.approx([35 / (s * w), 21 / (s * h)])

    extract = deform_inputs(levels, [vit])
    assert extract.reference_points.shape == (1, 24 + 6 + 2, 1, 2)
    assert extract.spatial_shapes.tolist() == [[2, 3]] and extract.level_start_index.tolist() == [0]
    # stride-8 pixel (3, 5): centre (44, 28) -> beyond the ViT's 42 px in x
    assert extract.reference_points[0, 23, 0].tolist() == pytest.approx([44 / 42, 28 / 28])
    # stride-32 pixel (0, 1): centre (48, 16)
    assert extract.reference_points[0, 31, 0].tolist() == pytest.approx([48 / 42, 16 / 28])


def test_resampled_vit_features_land_at_their_image_positions():
    src = Level(3, 5, 14)
    # a map whose value is the image x coordinate of each token centre: bilinear sampling is exact on it
    ramp = (torch.arange(src.w) * 14 + 7.0).expand(1, 1, src.h, src.w)
    assert torch.allclose(resample(ramp, src, src), ramp)
    for dst in (Level(11, 18, 4), Level(6, 9, 8), Level(3, 5, 16), Level(2, 3, 32)):
        x = (torch.arange(dst.w) + 0.5) * dst.stride
        expected = x.clamp(7, 14 * src.w - 7).expand(1, 1, dst.h, dst.w)  # past the end: the last token
        assert torch.allclose(resample(ramp, src, dst), expected, atol=1e-4), dst


def test_interaction_indexes():
    assert default_interaction_indexes(48) == [[0, 11], [12, 23], [24, 35], [36, 47]]
    assert default_interaction_indexes(45) == [[0, 11], [12, 22], [23, 33], [34, 44]]
    assert check_interaction_indexes([[0, 11], [12, 23], [24, 35], [36, 47]], 48)[-1] == (36, 47)
    for bad in ([[0, 11], [12, 23], [24, 35], [36, 46]],  # leaves block 47 out
                [[0, 11], [13, 23], [24, 35], [36, 47]],  # skips block 12
                [[0, 23], [24, 47]]):  # not 4 groups
        with pytest.raises(ValueError):
            check_interaction_indexes(bad, 48)


# ------------------------------------------------------------------ deformable attention
def reference_deformable_attention(attn, query, value, reference_points, shapes):
    """Multi-scale deformable attention written out: per head and level, sample the level's
    values at reference + offset / level size with bilinear grid_sample, weight, sum."""
    B, Nq, _ = query.shape
    heads, levels, points = attn.num_heads, len(shapes), attn.num_points
    v = attn.value_proj(value)
    d = v.shape[-1] // heads
    offsets = attn.sampling_offsets(query).view(B, Nq, heads, levels, points, 2)
    weights = attn.attention_weights(query).view(B, Nq, heads, levels * points).softmax(-1)
    weights = weights.view(B, Nq, heads, levels, points)
    out = torch.zeros(B, Nq, heads, d)
    start = 0
    for lv, (h, w) in enumerate(shapes):
        v_level = v[:, start:start + h * w].reshape(B, h, w, heads, d)
        start += h * w
        for head in range(heads):
            image = v_level[..., head, :].permute(0, 3, 1, 2)  # B, d, h, w
            loc = reference_points[:, :, lv, None, :] + offsets[:, :, head, lv] / torch.tensor([w, h])
            # grid_sample, align_corners=False: 0 and 1 are the outer edges of the level
            sampled = F.grid_sample(image, 2 * loc - 1, mode='bilinear', padding_mode='zeros', align_corners=False)
            out[:, :, head] += (sampled.permute(0, 2, 3, 1) * weights[:, :, head, lv, :, None]).sum(2)
    return attn.output_proj(out.reshape(B, Nq, heads * d))


def randomize_attention_(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            # offsets of a few pixels, some off the map, and uneven attention weights
            scale = 1.0 if 'sampling_offsets' in name or 'attention_weights' in name else 0.2
            p.copy_(scale * torch.randn(p.shape, generator=g))
    return module


def test_injector_and_extractor_attention_match_a_direct_computation():
    model = tiny_adapter()
    injector = randomize_attention_(model.interactions[0].injector)
    extractor = randomize_attention_(model.interactions[0].extractor, seed=1)
    vit = Level(5, 6, 14)
    levels = (Level(9, 11, 8), Level(5, 6, 16), Level(3, 3, 32))
    x = torch.randn(2, vit.numel, 32)
    c = torch.randn(2, sum(lv.numel for lv in levels), 32)
    shapes = [(lv.h, lv.w) for lv in levels]

    inputs = deform_inputs([vit], levels)
    with torch.no_grad():
        got = injector(x, c, inputs)
        attn = reference_deformable_attention(injector.attn, injector.query_norm(x), injector.feat_norm(c),
                                              inputs.reference_points.expand(2, -1, -1, -1), shapes)
    torch.testing.assert_close(got, x + injector.gamma * attn, rtol=1e-5, atol=1e-5)

    inputs = deform_inputs(levels, [vit])
    with torch.no_grad():
        got = extractor(c, x, inputs, levels)
        attended = c + reference_deformable_attention(extractor.attn, extractor.query_norm(c), extractor.feat_norm(x),
                                                      inputs.reference_points.expand(2, -1, -1, -1),
                                                      [(vit.h, vit.w)])
        expected = attended + extractor.ffn(extractor.ffn_norm(attended), levels)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ gradients
def test_full_tuning_gradients_reach_adapter_and_vit():
    model = tiny_adapter().train()
    loss_of(model(torch.randn(2, 3, 98, 126))).backward()
    params = dict(model.named_parameters())
    assert all(p.requires_grad for p in params.values())
    missing = [n for n, p in params.items() if p.grad is None]
    assert not missing, missing
    # gamma = 0 at init: the injectors' attention gets exactly-zero gradients until gamma moves
    nonzero = [n for n, p in params.items() if p.grad.abs().sum() > 0]
    for prefix in ['spm.', 'level_embed', 'up.', 'norms.', 'vit.patch_embed.', 'vit.pos_embed'] + \
            [f'vit.blocks.{i}.' for i in range(4)] + [f'interactions.{i}.injector.gamma' for i in range(4)] + \
            [f'interactions.{i}.extractor.' for i in range(4)] + ['interactions.3.extra_extractors.1.']:
        assert any(n.startswith(prefix) for n in nonzero), prefix


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_a_model_cast_to_half_precision_runs_like_the_float32_one(dtype):
    """DeepSpeed bf16/fp16 casts the whole model: mmcv's CPU path must get a grid in the value's dtype."""
    model = tiny_adapter().train()
    with torch.no_grad():  # gamma != 0, so that the injectors' attention is in the outputs
        for interaction in model.interactions:
            interaction.injector.gamma.fill_(0.5)
    images = torch.randn(2, 3, 98, 126)
    reference = model(images)
    half = model.to(dtype)
    outs = half(images.to(dtype))
    assert all(o.dtype == dtype for o in outs)
    for got, want in zip(outs, reference):
        error = (got.float() - want).norm() / want.norm()
        assert error < 0.05, error.item()  # bf16 keeps ~3 significant digits
    loss_of([o.float() for o in outs]).backward()
    grads = [p.grad for n, p in half.named_parameters() if n.startswith('interactions.0.injector.attn.')]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


def test_frozen_vit_stays_bit_identical_and_injectors_still_learn():
    model = tiny_adapter(frozen=True).train()
    assert not model.vit.training, 'a frozen ViT stays in eval mode'
    assert not any(p.requires_grad for p in model.vit.parameters())
    assert all(p.requires_grad for n, p in model.named_parameters() if not n.startswith('vit.'))
    # even an optimizer over every parameter, weight decay included, must leave the ViT alone
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.05)
    vit_before = {n: p.detach().clone() for n, p in model.vit.named_parameters()}
    images = torch.randn(2, 3, 112, 112)

    loss_of(model(images)).backward()
    # the first injector's only way to the loss is through the frozen ViT blocks after it
    for interaction in model.interactions:
        assert interaction.injector.gamma.grad.abs().sum() > 0
    optimizer.step()
    optimizer.zero_grad()
    loss_of(model(images)).backward()  # now gamma != 0: the injectors' attention learns too
    assert model.interactions[0].injector.attn.value_proj.weight.grad.abs().sum() > 0
    optimizer.step()

    for n, p in model.vit.named_parameters():
        assert p.grad is None and torch.equal(p, vit_before[n]), n


@pytest.mark.parametrize('frozen', [False, True])
def test_activation_checkpointing_changes_nothing(frozen, monkeypatch):
    from conftest import randomize_
    plain = randomize_(tiny_adapter(frozen=frozen))  # gamma != 0 so that every path matters
    ckpt = tiny_adapter(frozen=frozen, with_cp=True)
    ckpt.load_state_dict(plain.state_dict())
    images = torch.randn(2, 3, 98, 126)

    calls = []
    real_checkpoint = torch.utils.checkpoint.checkpoint
    monkeypatch.setattr(torch.utils.checkpoint, 'checkpoint',
                        lambda *a, **k: calls.append(1) or real_checkpoint(*a, **k))
    results = []
    for model in (plain, ckpt):
        model.train()
        calls.clear()
        outs = model(images)
        loss_of(outs).backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
        results.append((outs, grads, len(calls)))
    (outs_a, grads_a, calls_a), (outs_b, grads_b, calls_b) = results
    assert calls_a == 0 and calls_b == 4 + 4 + (4 + 2)  # injectors, blocks, extractors
    for a, b in zip(outs_a, outs_b):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert grads_a.keys() == grads_b.keys() and any(k.startswith('vit.') for k in grads_a) != frozen
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=1e-4, atol=1e-6, msg=name)


# ------------------------------------------------------------------ configs, loading, layer decay
def build_on_meta(path):
    cfg = Config.fromfile(path)
    init_default_scope('mmseg')
    from mmseg.registry import MODELS
    with torch.device('meta'):
        return cfg, MODELS.build(cfg.model)


def test_6b_adapter_config_on_meta():
    cfg, model = build_on_meta(CONFIG_6B)
    bb = model.backbone
    assert isinstance(bb, InternViTAdapter) and bb.frozen and bb.depth == 48 and bb.with_cp
    assert bb.interaction_indexes == [(0, 11), (12, 23), (24, 35), (36, 47)]
    vit = sum(p.numel() for p in bb.vit.parameters())
    adapter = sum(p.numel() for p in bb.parameters()) - vit
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f'6B adapter config: ViT {vit:,}, adapter {adapter:,}, total {total:,}, trainable {trainable:,}')
    # By hand, C = 3200, deformable attention with 25 heads, 4 points, values C/2 = 1600:
    #   ViT: 48 blocks x 122,918,400 + patch embed 1,884,800 + cls 3,200 + pos (1+16*16) x C 822,400
    #        = 5,902,793,600
    #   injector (3 levels): offsets C*600+600, weights C*300+300, value C*1600+1600, out 1600*C+C,
    #        2 LayerNorms 4C, gamma C = 13,141,700
    #   extractor (1 level): offsets C*200+200, weights C*100+100, value/out as above, 3 LayerNorms 6C,
    #        ConvFFN fc1 C*800+800, dw 800*9+800, fc2 800*C+C = 16,356,300
    #   4 x (injector + extractor) + 2 extra extractors = 150,704,600
    #   spatial prior (64 ch): convs 1,033,920 + BN 1,664 + 1x1 projections 2,265,600 = 3,301,184
    #   level embed 3C 9,600; up ConvTranspose 4C^2+C 40,963,200; 4 output BN 8C 25,600
    #   adapter = 195,004,184
    assert vit == 5_902_793_600
    assert adapter == 195_004_184
    # + UperNet 1536 ch on 4 x 3200 (312,480,918) + FCN aux (7,411,862): 6.42B total, 0.51B trainable
    assert 6.35e9 < total < 6.5e9 and 0.48e9 < trainable < 0.55e9
    assert trainable == adapter + sum(p.numel() for n, p in model.named_parameters() if 'head' in n)
    assert cfg.optim_wrapper.paramwise_cfg.no_decay_names == ['level_embed']
    assert cfg.model.test_cfg == dict(mode='slide', crop_size=(504, 504), stride=(322, 322))

    _, model = build_on_meta(CONFIG_6B_448)
    assert model.backbone.depth == 45 and model.backbone.interaction_indexes[-1] == (34, 44)

    cfg, full = build_on_meta(CONFIG_6B_FULL)
    assert not full.backbone.frozen and full.backbone.with_cp
    assert all(p.requires_grad for p in full.parameters())
    assert sum(p.numel() for p in full.parameters()) == total
    assert cfg.model.backbone.vit.drop_path_rate == 0.4
    assert cfg.optim_wrapper.paramwise_cfg == dict(layer_decay_rate=0.95, no_decay_names=['level_embed'])
    assert cfg.optim_wrapper.constructor == 'LayerDecayOptimWrapperConstructor'


def test_registered_as_backbone_in_mmseg_and_mmdet():
    from mmdet.registry import MODELS as DET_MODELS
    from mmseg.registry import MODELS as SEG_MODELS
    for registry in (SEG_MODELS, DET_MODELS):
        assert registry.get('InternViTAdapter') is InternViTAdapter


def test_inner_vit_loads_its_pretrained_weights_through_the_segmentor(tmp_path):
    cfg = Config.fromfile(CONFIG_TINY)
    src = InternViT(arch=cfg.model.backbone.vit.arch, img_size=112, pretrain_size=112)
    with torch.no_grad():
        for p in src.parameters():
            p.normal_()
    save_checkpoint(src, str(tmp_path / 'vit.pth'))
    cfg.model.backbone.vit.init_cfg = dict(type='Pretrained', checkpoint=str(tmp_path / 'vit.pth'))
    init_default_scope('mmseg')
    from mmseg.registry import MODELS
    model = MODELS.build(cfg.model)
    model.init_weights()  # mmengine recurses: segmentor -> InternViTAdapter -> InternViT.init_weights
    for name, p in src.state_dict().items():
        assert torch.equal(model.backbone.vit.state_dict()[name], p), name
    assert not any(p.requires_grad for p in model.backbone.vit.parameters())


def test_layer_decay_numbers_the_wrapped_vit_like_a_plain_backbone():
    depth = 4
    adapter = tiny_adapter()
    assert adapter.get_layer_depth('vit.cls_token') == (0, depth + 2)
    assert adapter.get_layer_depth('backbone.vit.pos_embed', prefix='backbone.') == (0, depth + 2)
    assert adapter.get_layer_depth('vit.patch_embed.proj.weight')[0] == 0
    assert adapter.get_layer_depth('vit.blocks.2.attn.qkv.weight')[0] == 3
    for name in ('spm.stem.0.0.weight', 'level_embed', 'up.weight', 'norms.0.weight',
                 'interactions.0.injector.gamma'):
        assert adapter.get_layer_depth(name) == (depth + 1, depth + 2), name

    class Segmentor(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = tiny_adapter()
            self.decode_head = nn.Linear(32, 5)

    model = Segmentor()
    rate, lr, wd = 0.9, 1e-3, 0.05
    optim_wrapper = build_optim_wrapper(model, dict(
        type='OptimWrapper', optimizer=dict(type='AdamW', lr=lr, weight_decay=wd),
        constructor='LayerDecayOptimWrapperConstructor',
        paramwise_cfg=dict(layer_decay_rate=rate, no_decay_names=['level_embed'])))  # num_layers from depth
    group_of = {id(p): g for g in optim_wrapper.optimizer.param_groups for p in g['params']}
    for name, p in model.named_parameters():
        parts = name.split('.')
        if parts[:2] == ['backbone', 'vit']:
            layer = int(parts[3]) + 1 if parts[2] == 'blocks' else 0
        else:
            layer = depth + 1
        assert group_of[id(p)]['lr'] == pytest.approx(lr * rate ** (depth + 1 - layer)), name
    assert group_of[id(model.backbone.level_embed)]['weight_decay'] == 0.0
