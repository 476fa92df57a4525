"""Other libraries' encoders behind InternViT's interface: agreement with our InternViT (an independent
implementation, timm's vit_intern300m), with the wrapped libraries' own forwards, and InternViT's semantics."""
import pytest
import torch
from conftest import TINY_300M, randomize_, tiny_vit

from internvit_dense.models.backbones import HFEncoder, TimmEncoder
from internvit_dense.models.backbones.library_encoders import IMAGENET_MEAN, IMAGENET_STD, EncoderLoadError

pytestmark = pytest.mark.usefixtures('one_thread')

# timm's vit_intern300m_patch14_448 at TINY_300M's widths (the 300M preset otherwise: LayerNorm, qkv bias,
# layer scale 0.1, no final norm).
TIMM_TINY_300M = dict(embed_dim=TINY_300M['embed_dims'], depth=TINY_300M['depth'], num_heads=TINY_300M['num_heads'],
                      mlp_ratio=TINY_300M['mlp_dims'] / TINY_300M['embed_dims'])


def images(n=2, size=56, seed=1):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def to_encoder_input(x, mean, std):
    """What the wrapper must hand the encoder for ImageNet-normalised x: the same pixels, its own normalisation."""
    m_in, s_in = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x * s_in + m_in - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


@pytest.fixture(scope='module')
def internvit_300m_file(tmp_path_factory):
    """A tiny-width InternViT-300M with random weights, saved as a timm-layout safetensors file."""
    from safetensors.torch import save_file
    ours = tiny_vit(TINY_300M, seed=3, img_size=56, pretrain_size=56)
    path = tmp_path_factory.mktemp('w') / 'internvit_300m_tiny.safetensors'
    save_file({k: v.contiguous() for k, v in ours.state_dict().items()}, str(path))
    return ours, str(path)


def resampled_like_timm(ours, size):
    """Our model with its position embedding resampled to ``size`` the way timm does (antialiased bicubic;
    InternVL and our InternViT use plain bicubic), so that the two differ in nothing else."""
    from timm.layers import resample_abs_pos_embed
    copy = tiny_vit(TINY_300M, img_size=size, pretrain_size=size)
    state = dict(ours.state_dict())
    state['pos_embed'] = resample_abs_pos_embed(ours.pos_embed.detach(), [size // 14] * 2,
                                                list(ours.pretrain_grid), num_prefix_tokens=1)
    copy.load_state_dict(state)
    return copy.eval()


# The native grid, and a larger one: there the two resample the position embedding with different
# bicubic kernels (timm antialiased, InternVL plain), the only difference between the implementations.
@pytest.mark.parametrize('size', [56, 84])
def test_timm_intern300m_gives_our_internvit_features(internvit_300m_file, size):
    ours, path = internvit_300m_file
    if size != 56:
        with torch.no_grad():
            plain = ours.get_intermediate_layers(images(size=size), n=1)[0]
        ours = resampled_like_timm(ours, size)
        with torch.no_grad():
            assert (ours.get_intermediate_layers(images(size=size), n=1)[0] - plain).abs().max() > 1e-3
    wrapped = TimmEncoder('vit_intern300m_patch14_448', checkpoint=path, img_size=56, frozen=True,
                          out_indices=[0, -1], model_kwargs=TIMM_TINY_300M)
    wrapped.init_weights()
    x = images(size=size)
    with torch.no_grad():
        want = ours.get_intermediate_layers(x, n=[0, -1], return_class_token=True)
        got = wrapped.get_intermediate_layers(x, n=[0, -1], return_class_token=True)
        for (p_ours, c_ours), (p_timm, c_timm) in zip(want, got):
            torch.testing.assert_close(p_timm, p_ours, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(c_timm, c_ours, rtol=1e-4, atol=1e-4)
        maps_ours, maps_timm = ours.get_intermediate_layers(x, n=[0, -1], reshape=True), wrapped(x)
    assert [tuple(m.shape) for m in maps_timm] == [(2, TINY_300M['embed_dims'], size // 14, size // 14)] * 2
    for a, b in zip(maps_timm, maps_ours):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_timm_wrapper_equals_timm_forward_features():
    """DINOv2 with registers (cls + 4 register tokens, a final norm): the last block through the wrapper is
    timm's own forward_features; the class token is the first prefix token, registers are dropped."""
    wrapped = TimmEncoder('vit_small_patch14_reg4_dinov2', img_size=56, frozen=True,
                          model_kwargs=dict(embed_dim=48, depth=3, num_heads=3))
    randomize_(wrapped.model, seed=5)
    model = wrapped.model
    assert model.num_prefix_tokens == 5
    x = images()
    with torch.no_grad():
        ref = model.forward_features(to_encoder_input(x, model.pretrained_cfg['mean'], model.pretrained_cfg['std']))
        (patches, cls_tok), = wrapped.get_intermediate_layers(x, n=1, return_class_token=True)
    torch.testing.assert_close(patches, ref[:, 5:], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cls_tok, ref[:, 0], rtol=1e-5, atol=1e-5)


def test_timm_encoder_without_class_token_and_other_normalisation():
    """SigLIP (mean/std 0.5, attention pooling, no class token): the input is re-normalised for it, and the
    mean patch token stands in for the class token."""
    wrapped = TimmEncoder('vit_base_patch16_siglip_224', img_size=64, frozen=True,
                          model_kwargs=dict(embed_dim=32, depth=2, num_heads=2))
    randomize_(wrapped.model, seed=6)
    assert wrapped.encoder_mean == (0.5, 0.5, 0.5) and not wrapped.has_class_token
    x = images(size=64)
    with torch.no_grad():
        ref = wrapped.model.forward_features(to_encoder_input(x, (0.5,) * 3, (0.5,) * 3))
        (patches, cls_tok), = wrapped.get_intermediate_layers(x, n=1, return_class_token=True)
    torch.testing.assert_close(patches, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cls_tok, ref.mean(dim=1), rtol=1e-5, atol=1e-5)


def test_internvit_semantics_frozen_indices_and_training():
    frozen = TimmEncoder('vit_intern300m_patch14_448', img_size=56, frozen=True, out_indices=[-2, -1],
                         model_kwargs=dict(TIMM_TINY_300M, depth=3))
    assert frozen.out_indices == [1, 2] and frozen.depth == 3 and frozen.patch_size == 14
    assert frozen.embed_dims == TINY_300M['embed_dims']
    assert not any(p.requires_grad for p in frozen.parameters())
    frozen.train()
    assert not frozen.training and not frozen.model.training
    outs = frozen(images().requires_grad_(True))
    assert all(o.grad_fn is None for o in outs)  # no autograd graph through a frozen encoder
    with pytest.raises(IndexError, match='outside the 3 blocks'):
        TimmEncoder('vit_intern300m_patch14_448', img_size=56, out_indices=[3], model_kwargs=dict(TIMM_TINY_300M,
                                                                                                 depth=3))

    trainable = TimmEncoder('vit_intern300m_patch14_448', img_size=56, with_cp=True, drop_path_rate=0.1,
                            model_kwargs=TIMM_TINY_300M)
    trainable.train()
    sum(o.sum() for o in trainable(images())).backward()
    assert trainable.model.blocks[0].attn.qkv.weight.grad is not None


def test_weights_come_from_local_files_only(internvit_300m_file, tmp_path):
    with pytest.raises(FileNotFoundError, match='local files only'):
        TimmEncoder('vit_intern300m_patch14_448', checkpoint=str(tmp_path / 'missing.safetensors'),
                    model_kwargs=TIMM_TINY_300M).init_weights()
    _, path = internvit_300m_file
    wrong = TimmEncoder('vit_intern300m_patch14_448', checkpoint=path, model_kwargs=dict(TIMM_TINY_300M, depth=3))
    with pytest.raises(EncoderLoadError, match='does not fit'):
        wrong.init_weights()
    with pytest.raises(FileNotFoundError, match='huggingface-cli download facebook/dinov2-large'):
        HFEncoder('facebook/dinov2-large')
    with pytest.raises(KeyError, match='not a timm model'):
        TimmEncoder('no_such_model_anywhere')


@pytest.fixture(scope='module')
def hf_dinov2_dir(tmp_path_factory):
    """A tiny DINOv2 in transformers' own folder layout, with a preprocessor config."""
    import json

    from transformers import Dinov2Config, Dinov2Model
    cfg = Dinov2Config(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
                       patch_size=14, image_size=56)
    torch.manual_seed(0)
    model = randomize_(Dinov2Model(cfg), seed=7).eval()
    path = tmp_path_factory.mktemp('hf') / 'dinov2_tiny'
    model.save_pretrained(str(path))
    (path / 'preprocessor_config.json').write_text(json.dumps(dict(image_mean=[0.4, 0.45, 0.5],
                                                                   image_std=[0.2, 0.25, 0.3])))
    return str(path), model


def test_hf_wrapper_equals_transformers_forward(hf_dinov2_dir):
    path, model = hf_dinov2_dir
    wrapped = HFEncoder(path, frozen=True, out_indices=[0, -1])
    assert (wrapped.depth, wrapped.embed_dims, wrapped.patch_size) == (3, 32, 14)
    x = images(size=70)  # not the config's 56: transformers' DINOv2 interpolates the position embedding
    with torch.no_grad():
        ref = model(pixel_values=to_encoder_input(x, [0.4, 0.45, 0.5], [0.2, 0.25, 0.3]), output_hidden_states=True)
        (p0, c0), (p2, c2) = wrapped.get_intermediate_layers(x, n=[0, 2], return_class_token=True)
        maps = wrapped(x)
    # the last block with the final norm is transformers' last_hidden_state
    torch.testing.assert_close(p2, ref.last_hidden_state[:, 1:], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(c2, ref.last_hidden_state[:, 0], rtol=1e-5, atol=1e-5)
    # an earlier block is its hidden state through that same norm
    block0 = model.layernorm(ref.hidden_states[1])
    torch.testing.assert_close(p0, block0[:, 1:], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(c0, block0[:, 0], rtol=1e-5, atol=1e-5)
    assert [tuple(m.shape) for m in maps] == [(2, 32, 5, 5)] * 2
    torch.testing.assert_close(maps[1].flatten(2).transpose(1, 2), p2)
    assert not any(p.requires_grad for p in wrapped.parameters())
    depths = {n: wrapped.get_layer_depth(n, 'backbone.')[0] for n, _ in wrapped.named_parameters(prefix='backbone')}
    assert depths['backbone.model.embeddings.cls_token'] == 0
    assert depths['backbone.model.encoder.layer.2.mlp.fc1.weight'] == 3 and depths['backbone.model.layernorm.weight'] == 4


def test_layer_depths_for_layer_wise_decay():
    enc = TimmEncoder('vit_intern300m_patch14_448', img_size=56, model_kwargs=dict(TIMM_TINY_300M, depth=3))
    names = dict(enc.named_parameters(prefix='backbone'))
    depth = {n: enc.get_layer_depth(n, 'backbone.') for n in names}
    assert depth['backbone.model.cls_token'] == (0, 5) and depth['backbone.model.patch_embed.proj.weight'] == (0, 5)
    assert depth['backbone.model.blocks.0.attn.qkv.weight'] == (1, 5)
    assert depth['backbone.model.blocks.2.ls2.gamma'] == (3, 5)
    assert enc.get_layer_depth('decode_head.conv_seg.weight', 'backbone.') == (4, 5)


def test_registered_for_mmseg_mmdet_and_the_runner():
    from mmdet.registry import MODELS as DET
    from mmengine.registry import MODELS as ENGINE
    from mmseg.registry import MODELS as SEG

    import internvit_dense.models  # noqa: F401
    for registry in (SEG, DET, ENGINE):
        bb = registry.build(dict(type='TimmEncoder', model_name='vit_intern300m_patch14_448', img_size=56,
                                 out_indices=[-1], frozen=True, model_kwargs=TIMM_TINY_300M))
        assert isinstance(bb, TimmEncoder)
        assert registry.get('HFEncoder') is HFEncoder


@pytest.mark.parametrize('family', ['dinov3', 'siglip'])
def test_hf_dinov3_with_registers_and_siglip_without_cls(family, tmp_path):
    """DINOv3 (cls + 4 register tokens, RoPE, final norm 'norm') and SigLIP (no prefix tokens, 'post_layernorm'):
    the wrapper's last block is transformers' last_hidden_state; SigLIP's class token is the mean patch token."""
    from transformers import DINOv3ViTConfig, DINOv3ViTModel, SiglipVisionConfig, SiglipVisionModel
    kw = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, patch_size=16,
              image_size=64)
    if family == 'dinov3':
        model, n_prefix = DINOv3ViTModel(DINOv3ViTConfig(num_register_tokens=4, **kw)), 5
    else:
        model, n_prefix = SiglipVisionModel(SiglipVisionConfig(**kw)), 0
    randomize_(model, seed=8).eval().save_pretrained(str(tmp_path))
    wrapped = HFEncoder(str(tmp_path), frozen=True)
    x = images(size=64)
    with torch.no_grad():
        ref = model(pixel_values=x, output_hidden_states=True).last_hidden_state  # ImageNet mean/std: no preprocessor
        (patches, cls_tok), = wrapped.get_intermediate_layers(x, n=1, return_class_token=True)
    torch.testing.assert_close(patches, ref[:, n_prefix:], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cls_tok, ref[:, 0] if n_prefix else ref.mean(dim=1), rtol=1e-5, atol=1e-5)
