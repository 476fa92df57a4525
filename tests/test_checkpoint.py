import json

import pytest
import torch
from conftest import TINY_300M, TINY_6B, tiny_vit

from internvit_dense.checkpoint import (FORMAT_OPENGVLAB_HF, FORMAT_PTH, FORMAT_TRANSFORMERS, CheckpointError,
                                        load_state_dict, save_checkpoint)
from internvit_dense.models.backbones import InternViT

X = torch.randn(2, 3, 56, 70)


def fresh(arch=TINY_6B, **kw):
    kw.setdefault('pretrain_size', 56)
    return InternViT(arch=dict(arch), patch_size=kw.pop('patch_size', 14), **kw).eval()


def same_outputs(a, b):
    with torch.no_grad():
        torch.testing.assert_close(a.forward_features(X), b.forward_features(X), atol=0, rtol=0)


@pytest.mark.parametrize('arch', [TINY_6B, TINY_300M])
@pytest.mark.parametrize('fmt,kwargs', [
    (FORMAT_PTH, {}),
    (FORMAT_OPENGVLAB_HF, {}),
    (FORMAT_OPENGVLAB_HF, dict(max_shard_bytes=40_000)),
    (FORMAT_OPENGVLAB_HF, dict(safetensors=False)),
    (FORMAT_TRANSFORMERS, {}),
    (FORMAT_TRANSFORMERS, dict(max_shard_bytes=40_000, safetensors=False)),
])
def test_round_trip(tmp_path, arch, fmt, kwargs):
    src = tiny_vit(arch)
    path = str(tmp_path / ('ckpt.pth' if fmt == FORMAT_PTH else 'hf'))
    save_checkpoint(src, path, fmt=fmt, **kwargs)
    if kwargs.get('max_shard_bytes'):
        index = json.load(open(next((tmp_path / 'hf').glob('*.index.json'))))
        assert len(set(index['weight_map'].values())) > 1  # really sharded
    dst = fresh(arch)
    info = dst.load_pretrained(path)
    assert info['format'] == fmt and not info['missing'] and not info['unexpected']
    same_outputs(src, dst)
    if fmt != FORMAT_PTH:  # the directory's config.json is enough to build the model
        same_outputs(src, InternViT.from_pretrained(path).eval())


@pytest.mark.parametrize('wrap', ['module', 'state_dict'])
def test_opengvlab_pth_wrapped_with_extra_heads(tmp_path, wrap):
    src = tiny_vit(TINY_6B)
    sd = dict(src.state_dict())
    sd['clip_projector.norm1_q.weight'] = torch.ones(64)
    torch.save({wrap: sd}, tmp_path / 'internvit.pth')
    dst = fresh()
    info = dst.load_pretrained(str(tmp_path / 'internvit.pth'))
    assert info['unexpected'] == ['clip_projector.norm1_q.weight']
    same_outputs(src, dst)


def test_chat_model_prefix_and_language_model_ignored(tmp_path):
    src = tiny_vit(TINY_6B)
    save_checkpoint(src, str(tmp_path / 'plain'), fmt=FORMAT_OPENGVLAB_HF)
    sd, _ = load_state_dict(str(tmp_path / 'plain'))
    from internvit_dense.checkpoint.formats import convert_from_native
    chat = {f'vision_model.{k}': v for k, v in convert_from_native(sd, FORMAT_OPENGVLAB_HF).items()}
    chat['language_model.model.embed_tokens.weight'] = torch.zeros(10, 8)
    chat['mlp1.0.weight'] = torch.zeros(4)
    torch.save(chat, tmp_path / 'chat.bin')
    dst = fresh()
    info = dst.load_pretrained(str(tmp_path / 'chat.bin'))
    assert info['format'] == FORMAT_OPENGVLAB_HF
    assert sorted(info['unexpected']) == ['language_model.model.embed_tokens.weight', 'mlp1.0.weight']
    same_outputs(src, dst)


def test_more_blocks_than_the_model_drops_the_last(tmp_path):
    """The 448px 6B checkpoints hold 48 blocks and are used with 45."""
    src = tiny_vit(dict(TINY_6B, depth=4))
    save_checkpoint(src, str(tmp_path / 'c.pth'))
    dst = fresh(dict(TINY_6B, depth=3))
    info = dst.load_pretrained(str(tmp_path / 'c.pth'))
    assert info['unexpected'] and all(k.startswith('blocks.3.') for k in info['unexpected'])
    with torch.no_grad():
        ref = src.get_intermediate_layers(X, n=[2])[0]
        torch.testing.assert_close(dst.get_intermediate_layers(X)[0], ref, atol=0, rtol=0)


def test_position_and_patch_embeddings_resized_on_load(tmp_path):
    src = tiny_vit(TINY_6B)  # 4x4 grid, patch 14
    save_checkpoint(src, str(tmp_path / 'c.pth'))
    bigger = fresh(pretrain_size=112)  # 8x8 grid
    bigger.load_pretrained(str(tmp_path / 'c.pth'))
    assert bigger.pos_embed.shape == (1, 65, TINY_6B['embed_dims'])
    torch.testing.assert_close(bigger.pos_embed[:, 0], src.pos_embed[:, 0])  # cls entry kept
    # at 112px input, the resized table equals what src interpolates on the fly
    torch.testing.assert_close(bigger.pos_embed, src.interpolate_pos_embed((8, 8)))
    p16 = fresh(patch_size=16, pretrain_size=64)
    p16.load_pretrained(str(tmp_path / 'c.pth'))
    assert p16.patch_embed.proj.weight.shape == (TINY_6B['embed_dims'], 3, 16, 16)
    assert p16(torch.randn(1, 3, 64, 64))[0].shape == (1, TINY_6B['embed_dims'], 4, 4)


def test_built_on_meta_holds_no_meta_tensor(tmp_path):
    src = tiny_vit(TINY_300M)
    save_checkpoint(src, str(tmp_path / 'hf'), fmt=FORMAT_TRANSFORMERS, max_shard_bytes=30_000)
    model = InternViT.from_pretrained(str(tmp_path / 'hf'), frozen=True)
    assert not any(p.is_meta for p in model.parameters())
    assert not any(p.requires_grad for p in model.parameters())
    same_outputs(src, model.eval())


def test_wrong_architecture_names_key_and_shapes(tmp_path):
    save_checkpoint(tiny_vit(dict(TINY_300M, embed_dims=48, num_heads=3, mlp_dims=192)), str(tmp_path / 'c.pth'))
    expects = TINY_6B['embed_dims']
    with pytest.raises(CheckpointError, match=rf"'cls_token' has shape \(1, 1, 48\) but the model expects \(1, 1, {expects}\)"):
        fresh(TINY_6B).load_pretrained(str(tmp_path / 'c.pth'))


def test_too_few_blocks_is_an_error(tmp_path):
    last = TINY_6B['depth'] - 1
    save_checkpoint(tiny_vit(dict(TINY_6B, depth=last)), str(tmp_path / 'c.pth'))
    with pytest.raises(CheckpointError, match=rf"lacks 13 parameters.*'blocks\.{last}\."):
        fresh(TINY_6B).load_pretrained(str(tmp_path / 'c.pth'))


def test_missing_shard_is_an_error(tmp_path):
    save_checkpoint(tiny_vit(TINY_6B), str(tmp_path / 'hf'), fmt=FORMAT_TRANSFORMERS, max_shard_bytes=40_000)
    victim = sorted((tmp_path / 'hf').glob('model-*.safetensors'))[-1]
    victim.unlink()
    with pytest.raises(CheckpointError, match=f'missing shard.*{victim.name}'):
        fresh().load_pretrained(str(tmp_path / 'hf'))


@pytest.mark.parametrize('name', ['c.pth', 'model.safetensors'])
def test_corrupt_file_is_an_error(tmp_path, name):
    good = tmp_path / 'good'
    if name == 'c.pth':
        save_checkpoint(tiny_vit(TINY_6B), str(tmp_path / name))
        target = tmp_path / name
    else:
        save_checkpoint(tiny_vit(TINY_6B), str(good), fmt=FORMAT_OPENGVLAB_HF)
        target = good / name
    data = target.read_bytes()
    target.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match='cannot read checkpoint'):
        fresh().load_pretrained(str(tmp_path / name if name == 'c.pth' else good))


def test_not_a_checkpoint(tmp_path):
    torch.save({'foo': torch.zeros(1)}, tmp_path / 'x.pth')
    with pytest.raises(CheckpointError, match='not an InternViT checkpoint'):
        fresh().load_pretrained(str(tmp_path / 'x.pth'))
    with pytest.raises(CheckpointError, match='not found'):
        fresh().load_pretrained(str(tmp_path / 'nope.pth'))


# ------------------------------------------------------------------ one test per format class
def _ours(arch=TINY_6B):
    return dict(tiny_vit(arch).state_dict())


def _check_format(fmt, marker_key, arch=TINY_6B):
    """What every format class must do: recognise its own keys (with a prefix), rename both ways."""
    from internvit_dense.checkpoint import FORMATS, detect_format
    ours = _ours(arch)
    theirs = fmt.from_ours(ours)
    assert marker_key in theirs
    assert detect_format(theirs) == (fmt.name, '')
    assert detect_format([f'vision_model.{k}' for k in theirs]) == (fmt.name, 'vision_model.')
    back = dict(fmt.convert(list(theirs.items())))
    assert back.keys() == ours.keys()
    for k, v in ours.items():
        assert torch.equal(back[k], v), k
    assert type(FORMATS[fmt.name]) is type(fmt)  # in the table
    if fmt.hf_directory:  # config.json written and read back describes the same architecture
        arch_kwargs = tiny_vit(arch).arch_kwargs()
        cfg = fmt.config_for(arch_kwargs)
        assert fmt.matches_config(cfg)
        assert fmt.arch_from_config(cfg) == arch_kwargs
        assert not [f for f in FORMATS.values() if f is not fmt and f.hf_directory and f.matches_config(cfg)]
    return theirs


@pytest.mark.parametrize('arch', [TINY_6B, TINY_300M])
def test_format_pth(arch):
    from internvit_dense.checkpoint import FORMATS
    theirs = _check_format(FORMATS[FORMAT_PTH], 'cls_token', arch)
    assert theirs.keys() == _ours(arch).keys()  # our names are the .pth release's


@pytest.mark.parametrize('arch', [TINY_6B, TINY_300M])
def test_format_opengvlab_hf(arch):
    from internvit_dense.checkpoint import FORMATS
    theirs = _check_format(FORMATS[FORMAT_OPENGVLAB_HF], 'embeddings.class_embedding', arch)
    assert 'encoder.layers.0.ls1' in theirs and 'encoder.layers.0.attn.qkv.weight' in theirs


@pytest.mark.parametrize('arch', [TINY_6B, TINY_300M])
def test_format_transformers(arch):
    from internvit_dense.checkpoint import FORMATS
    fmt = FORMATS[FORMAT_TRANSFORMERS]
    theirs = _check_format(fmt, 'embeddings.cls_token', arch)
    assert 'encoder.layer.0.attention.k_proj.weight' in theirs and 'encoder.layer.0.lambda_1' in theirs
    # q, k, v of one block in different shards, and one whose siblings never arrive
    items = sorted(theirs.items(), key=lambda kv: ('v_proj' in kv[0], kv[0]))
    lone = ('encoder.layer.9.attention.q_proj.weight', torch.zeros(1))
    back = dict(fmt.convert(items + [lone]))
    assert torch.equal(back['blocks.0.attn.qkv.weight'], _ours(arch)['blocks.0.attn.qkv.weight'])
    assert lone[0] in back  # handed on under its own name: the model reports it as unexpected


@pytest.mark.parametrize('recipe', ['linear', 'upernet'])
def test_format_internvl_seg(recipe):
    """InternVL's ADE20K checkpoints: a whole-model format, recognised only where a whole model loads."""
    from internvl_reference import random_state, seg_file_keys

    from internvit_dense.checkpoint import FORMATS, detect_format
    fmt = FORMATS['internvl-seg']
    theirs = random_state(seg_file_keys(recipe, 16, 2, 32, grid=4, ch=8, aux_ch=8))
    assert fmt.whole_model and detect_format(theirs, whole_model=True) == ('internvl-seg', '')
    assert detect_format([f'module.{k}' for k in theirs], whole_model=True) == ('internvl-seg', 'module.')
    # read as a backbone's checkpoint, it is the .pth release under 'backbone.'
    assert detect_format(theirs) == (FORMAT_PTH, 'backbone.')
    ours = dict(fmt.convert(theirs.items()))
    assert ('neck.upsample_4x.0.weight' in ours) == (recipe == 'upernet')
    assert ('decode_head.bn.running_var' in ours) == (recipe == 'linear')
    assert not any(k.startswith(('backbone.up', 'decode_head.norm.')) for k in ours)
    back = fmt.from_ours(ours)
    assert back.keys() == theirs.keys() and all(back[k] is theirs[k] for k in theirs)


def test_format_internvl_cls():
    from internvl_reference import cls_head_keys, random_state

    from internvit_dense.checkpoint import FORMATS, detect_format
    fmt = FORMATS['internvl-cls']
    theirs = random_state(cls_head_keys(8, 5))
    assert detect_format(theirs, whole_model=True) == ('internvl-cls', '')
    ours = dict(fmt.convert(theirs.items()))
    assert sorted(ours) == sorted(['head.bn.weight', 'head.bn.bias', 'head.bn.running_mean', 'head.bn.running_var',
                                   'head.bn.num_batches_tracked', 'head.fc.weight', 'head.fc.bias'])
    assert fmt.from_ours(ours).keys() == theirs.keys()
    # our own head-only checkpoint is not taken for InternVL's
    with pytest.raises(ValueError):
        detect_format(ours, whole_model=True)
