"""eval --recipe-checkpoint refuses a probe trained on another backbone, crop or blocks than the cache holds."""
import pytest
import torch
from mmengine.config import Config

from internvit_dense.linear_probe.cache import CacheError, checkpoint_identity
from internvit_dense.linear_probe.recipe import check_against_cache, load_recipe_probe
from internvit_dense.models.backbones.internvit import resolve_arch

ARCH = dict(embed_dims=8, depth=4, num_heads=2)
CLASSES = 5


def write_probe(path, pretrained, arch=ARCH, n_last=1, avgpool=True, crop=28, dim=8, with_cfg=True,
                backbone_weights=False):
    cfg = Config(dict(
        model=dict(type='LinearProbeClassifier', num_classes=CLASSES, n_last_blocks=n_last, avgpool=avgpool,
                   backbone=dict(type='InternViT', arch=arch, img_size=crop,
                                 init_cfg=dict(type='Pretrained', checkpoint=pretrained))),
        test_dataloader=dict(dataset=dict(pipeline=[dict(type='LoadImageFromFile'),
                                                    dict(type='ResizeShortEdge', size=crop),
                                                    dict(type='CenterCrop', crop_size=crop)]))))
    in_dims = dim * (n_last + avgpool)
    sd = {'head.bn.running_mean': torch.zeros(in_dims), 'head.bn.running_var': torch.ones(in_dims),
          'head.fc.weight': torch.randn(CLASSES, in_dims), 'head.fc.bias': torch.zeros(CLASSES)}
    if backbone_weights:
        sd['backbone.cls_token'] = torch.zeros(1, 1, dim)
    torch.save(dict(state_dict=sd, meta=dict(cfg=cfg.pretty_text) if with_cfg else {}), path)
    return str(path)


@pytest.fixture
def files(tmp_path):
    a, b = tmp_path / 'vit_a.pth', tmp_path / 'vit_b.pth'
    torch.save({'w': torch.ones(3)}, a)
    torch.save({'w': torch.zeros(3)}, b)
    identity = dict(checkpoint=checkpoint_identity(str(a)), arch=resolve_arch(ARCH), img_size=28, blocks=[2, 3])
    return tmp_path, str(a), str(b), identity


def test_matching_probe_is_bound_to_the_last_blocks(files):
    tmp, a, _, identity = files
    probe = check_against_cache(load_recipe_probe(write_probe(tmp / 'p.pth', a)), identity, [2, 3], 8)
    assert probe.classifier.keys == [('cls', 3), ('patch', 3)]
    assert probe.unverified == []
    assert probe.verified == ['architecture', 'blocks [3]', '28 px crop', 'backbone weights (vit_a.pth)']

    probe = check_against_cache(load_recipe_probe(write_probe(tmp / 'p2.pth', a, n_last=2, avgpool=False)),
                                identity, [2, 3], 8)
    assert probe.classifier.keys == [('cls', 2), ('cls', 3)]


@pytest.mark.parametrize('change, message', [
    (dict(pretrained='b'), 'the probe was trained on'),
    (dict(crop=56), 'evaluated at 56 px; the cache holds 28 px'),
    (dict(arch=dict(ARCH, depth=6)), 'architecture differs'),
    (dict(n_last=3), 'needs 3 blocks; the cache has 2'),
    (dict(dim=16), 'the probe takes 32-d features'),
])
def test_mismatch_is_refused(files, change, message):
    tmp, a, b, identity = files
    kwargs = dict(change)
    pretrained = b if kwargs.pop('pretrained', 'a') == 'b' else a
    path = write_probe(tmp / 'bad.pth', pretrained, **kwargs)
    with pytest.raises(CacheError, match=message):
        check_against_cache(load_recipe_probe(path), identity, [2, 3], 8)


def test_blocks_that_are_not_the_last_ones_are_refused(files):
    tmp, a, _, identity = files
    with pytest.raises(CacheError, match=r'reads blocks \[3\] of 4; the cache holds blocks \[0, 1\]'):
        check_against_cache(load_recipe_probe(write_probe(tmp / 'p.pth', a)), dict(identity, blocks=[0, 1]),
                            [0, 1], 8)


def test_what_cannot_be_checked_is_reported(files):
    tmp, a, _, identity = files
    gone = str(tmp / 'moved_away.pth')
    probe = check_against_cache(load_recipe_probe(write_probe(tmp / 'p.pth', gone)), identity, [2, 3], 8)
    assert probe.unverified == [f"backbone weights: {gone} (the probe's pretrained file) is not on this machine"]

    probe = check_against_cache(load_recipe_probe(write_probe(tmp / 'p.pth', a, backbone_weights=True)),
                                identity, [2, 3], 8)
    assert 'backbone weights are inside the probe checkpoint' in probe.unverified[0]

    probe = check_against_cache(load_recipe_probe(write_probe(tmp / 'p.pth', a, with_cfg=False)), identity, [2, 3], 8)
    assert probe.verified == [] and 'no config' in probe.unverified[0]


def test_not_a_probe_checkpoint(tmp_path):
    torch.save(dict(state_dict={'decode_head.conv_seg.weight': torch.zeros(1)}), tmp_path / 'seg.pth')
    with pytest.raises(CacheError, match='not a LinearProbeClassifier checkpoint'):
        load_recipe_probe(str(tmp_path / 'seg.pth'))


def test_a_probe_of_another_encoder_is_refused_on_an_internvit_cache_and_the_reverse(files):
    tmp, a, _, identity = files
    path = write_probe(tmp / 'p.pth', a)
    ckpt = torch.load(path, weights_only=False)
    cfg = Config.fromstring(ckpt['meta']['cfg'], '.py')
    cfg.model.backbone = dict(type='TimmEncoder', model_name='vit_small_patch14_dinov2', img_size=28)
    ckpt['meta']['cfg'] = cfg.pretty_text
    torch.save(ckpt, tmp / 'timm_probe.pth')
    with pytest.raises(CacheError, match='trained on the backbone TimmEncoder'):
        check_against_cache(load_recipe_probe(str(tmp / 'timm_probe.pth')), identity, [2, 3], 8)
    timm_cache = dict(identity, encoder=dict(kind='timm', name='vit_small_patch14_dinov2'))
    probe = check_against_cache(load_recipe_probe(str(tmp / 'timm_probe.pth')), timm_cache, [2, 3], 8)
    assert probe.verified == ['encoder timm:vit_small_patch14_dinov2'] and probe.unverified
    with pytest.raises(CacheError, match='trained on the backbone InternViT'):
        check_against_cache(load_recipe_probe(path), timm_cache, [2, 3], 8)
