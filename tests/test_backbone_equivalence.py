"""InternViT against an independent implementation: transformers' InternVLVisionModel."""
import pytest
import torch
from conftest import TINY_300M, TINY_6B, randomize_, tiny_vit
from transformers import InternVLVisionConfig, InternVLVisionModel

from internvit_dense.checkpoint import FORMAT_TRANSFORMERS, save_checkpoint
from internvit_dense.models.backbones import InternViT

ARCHS = {'6b-style': TINY_6B, '300m-style': TINY_300M}
SIZES = [(56, 56), (84, 70)]  # the pretrained resolution, and another (non-square) one


def hf_config(arch):
    return InternVLVisionConfig(
        hidden_size=arch['embed_dims'], num_hidden_layers=arch['depth'], num_attention_heads=arch['num_heads'],
        intermediate_size=arch['mlp_dims'], norm_type=arch['norm_type'], use_qk_norm=arch['qk_normalization'],
        attention_bias=arch['qkv_bias'], layer_norm_eps=arch['layer_norm_eps'], image_size=[56, 56],
        patch_size=[14, 14], use_mean_pooling=True, attn_implementation='eager')


@pytest.mark.parametrize('size', SIZES)
@pytest.mark.parametrize('name', ARCHS)
def test_ours_saved_then_read_by_transformers(tmp_path, name, size):
    ours = tiny_vit(ARCHS[name], attn_impl='eager')
    save_checkpoint(ours, str(tmp_path / 'hf'), fmt=FORMAT_TRANSFORMERS)
    theirs = InternVLVisionModel.from_pretrained(str(tmp_path / 'hf'), attn_implementation='eager').eval()
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        expected = theirs(x, output_hidden_states=True)
        got = ours.forward_features(x)
        inter = ours.get_intermediate_layers(x, n=ours.depth, return_class_token=True)
    torch.testing.assert_close(got, expected.last_hidden_state, atol=1e-5, rtol=1e-5)
    for i, (patches, cls_tok) in enumerate(inter):
        ref = expected.hidden_states[i + 1]
        torch.testing.assert_close(patches, ref[:, 1:], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(cls_tok, ref[:, 0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('name', ARCHS)
def test_transformers_weights_loaded_into_ours(tmp_path, name):
    arch = ARCHS[name]
    theirs = randomize_(InternVLVisionModel(hf_config(arch)), seed=3).eval()
    theirs.save_pretrained(str(tmp_path / 'hf'))
    ours = InternViT.from_pretrained(str(tmp_path / 'hf'), attn_impl='eager').eval()
    assert ours.arch['embed_dims'] == arch['embed_dims'] and ours.depth == arch['depth']
    x = torch.randn(1, 3, 70, 98)
    with torch.no_grad():
        torch.testing.assert_close(ours.forward_features(x), theirs(x).last_hidden_state, atol=1e-5, rtol=1e-5)

    # and through init_cfg, the way configs load it
    fresh = InternViT(arch=dict(arch), patch_size=14, pretrain_size=56, attn_impl='eager',
                      init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'hf')))
    fresh.init_weights()
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval().forward_features(x), theirs(x).last_hidden_state,
                                   atol=1e-5, rtol=1e-5)


def test_feature_maps_for_dense_heads():
    model = tiny_vit(TINY_6B, out_indices=(0, -1))
    x = torch.randn(2, 3, 98, 70)
    feats = model(x)
    assert [tuple(f.shape) for f in feats] == [(2, TINY_6B['embed_dims'], 7, 5)] * 2
    tokens = model.get_intermediate_layers(x, n=[-1])[0]
    torch.testing.assert_close(feats[1], tokens.transpose(1, 2).reshape(2, TINY_6B['embed_dims'], 7, 5))
