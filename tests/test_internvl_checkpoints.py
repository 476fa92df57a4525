"""InternVL's released task checkpoints load into our configs as they are, strictly, and compute what InternVL's
code computes.

Each test writes a file with exactly the key names, shapes and dtypes of a released file (tests/internvl_reference.py,
derived from InternVL's module definitions and configs), random values, in the file's container, at a tiny width of
the same structure; loads it through our config; and compares our forward with a restatement of InternVL's forward.
"""
import os
import sys

import pytest
import torch
from internvl_reference import (BF16, backbone_keys, cls_head_keys, internvit6b_blocks, internvl_aux_head,
                                internvl_classifier, internvl_linear_head, internvl_pyramid, internvl_upernet_head,
                                random_state, seg_file_keys, write_cls_head_file)
from mmengine.config import Config
from mmengine.registry import init_default_scope

import internvit_dense.datasets  # noqa: F401
import internvit_dense.models  # noqa: F401
from internvit_dense.checkpoint.model_checkpoints import (ModelCheckpointError, load_model_checkpoint,
                                                          read_model_checkpoint)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEG = os.path.join(ROOT, 'configs/segmentation')
# the tiny width of the 6B structure: 3200 -> 32 channels (25 -> 2 heads), 48 -> 8 blocks, UperNet 1536 -> 16
C, HEADS, MLP, DEPTH, CH, AUX_CH = 32, 2, 128, 8, 16, 16
TINY_ARCH = dict(embed_dims=C, depth=DEPTH, num_heads=HEADS, mlp_dims=MLP, norm_type='rms_norm',
                 qk_normalization=True, qkv_bias=False, layer_norm_eps=1e-6)
# the recipes' blocks scaled to 8: linear probing reads block 45 of 48 -> 6 of 8; UperNet 12/24/36/48 -> 2/4/6/8
RECIPES = {
    'linear_frozen': dict(config='internvit_6b_linear_frozen_ade20k_504.py', head='linear', out=[6], frozen=True,
                          name='linear_intern_vit_6b_504_80k_ade20k_bs16_lr4e-5_frozen.py'),
    # the five few-shot rows: the same structure, the head on the last block
    **{f'linear_1of{n}': dict(config=f'internvit_6b_linear_full_ade20k_504_1of{n}_{k}k.py', head='linear', out=[7],
                              frozen=False, name=f'linear_intern_vit_6b_504_{k}k_ade20k_bs16_lr4e-5_1of{n}.py')
       for n, k in ((16, 5), (8, 10), (4, 20), (2, 40), (1, 80))},
    'upernet_frozen': dict(config='internvit_6b_upernet_frozen_ade20k_504.py', head='upernet', out=[1, 3, 5, 7],
                           frozen=True, name='upernet_intern_vit_6b_504_80k_ade20k_bs16_lr4e-5_frozen.py'),
    # its auxiliary head on level 2: InternVL's full-tuning config keeps mmseg's default in_index
    'upernet_full': dict(config='internvit_6b_upernet_full_ade20k_504.py', head='upernet', out=[1, 3, 5, 7],
                         frozen=False, name='upernet_intern_vit_6b_504_80k_ade20k_bs16_lr4e-5.py', aux_index=2),
}

pytestmark = pytest.mark.usefixtures('one_thread')


def training_config_text(recipe):
    """The part of the mmcv config text (meta['config']) that says which recipe a file is."""
    r = RECIPES[recipe]
    head = ("dict(type='FCNHead', in_channels=3200, channels=3200, num_convs=0, dropout_ratio=0.0, "
            "concat_input=False, num_classes=150, with_norm=True)" if r['head'] == 'linear' else
            "dict(type='UPerHead', in_channels=[3200, 3200, 3200, 3200], channels=1536, num_classes=150)")
    return (f"norm_cfg = dict(type='SyncBN', requires_grad=True)\n"
            f"model = dict(type='EncoderDecoder', pretrained=None, backbone=dict(type='InternViT6B', "
            f"pretrain_size=224, img_size=504, patch_size=14, embed_dim=3200, depth=48, num_heads=25, "
            f"with_fpn={r['head'] == 'upernet'}, freeze_vit={r['frozen']}, out_indices={r['out']}), "
            f"decode_head={head}, test_cfg=dict(mode='slide', crop_size=(504, 504), stride=(322, 322)))\n"
            "deepspeed = True\ncustom_hooks = [dict(type='ToBFloat16Hook', priority=49)]\n")


def write_seg_file(path, recipe, container='mmcv', seed=0):
    keys = seg_file_keys(RECIPES[recipe]['head'], C, DEPTH, MLP, grid=36, ch=CH, aux_ch=AUX_CH)
    sd = random_state(keys, seed)
    from mmseg.datasets import ADE20KDataset
    meta = dict(mmseg_version='0.30.0+unknown', config=training_config_text(recipe), exp_name=RECIPES[recipe]['name'],
                CLASSES=ADE20KDataset.METAINFO['classes'], PALETTE=ADE20KDataset.METAINFO['palette'],
                iter=80000, mmcv_version='1.7.0', time='Mon Dec 11 00:00:00 2023')
    obj = dict(meta=meta, state_dict=sd) if container == 'mmcv' else dict(module=sd)
    torch.save(obj, path)
    return sd, keys


def build_tiny(config, out_indices, **cfg_options):
    cfg = Config.fromfile(os.path.join(SEG, config))
    cfg.merge_from_dict({'model.backbone.arch': dict(TINY_ARCH, _delete_=True), 'model.backbone.init_cfg': None,
                         'model.backbone.out_indices': out_indices, 'model.backbone.with_cp': False,
                         'model.backbone.drop_path_rate': 0.0,
                         # compared in fp32 (the 6B frozen configs hold the backbone in bf16, as InternVL's file)
                         'model.backbone.dtype': 'float32', **cfg_options})
    if cfg.model.get('neck'):
        cfg.merge_from_dict({'model.neck.embed_dim': C, 'model.decode_head.in_channels': [C] * 4,
                             'model.decode_head.channels': CH, 'model.auxiliary_head.in_channels': C,
                             'model.auxiliary_head.channels': AUX_CH})
    else:
        cfg.merge_from_dict({'model.decode_head.in_channels': C, 'model.decode_head.channels': C})
    init_default_scope('mmseg')
    from mmseg.registry import MODELS
    return MODELS.build(cfg.model).eval()


@pytest.mark.parametrize('recipe', sorted(RECIPES))
def test_released_segmentation_file_loads_strictly_and_computes_as_internvl(recipe, tmp_path):
    r = RECIPES[recipe]
    path = tmp_path / r['name'].replace('.py', '.pth')
    sd, keys = write_seg_file(path, recipe)
    # the file's layout, as InternVL's code writes it
    assert sd['backbone.pos_embed'].shape == (1, 1297, C) and sd['backbone.pos_embed'].dtype == BF16
    assert sd['decode_head.conv_seg.weight'].dtype == torch.float32
    model = build_tiny(r['config'], r['out'])
    meta = load_model_checkpoint(model, path)
    assert meta['converted_from'] == 'internvl-seg' and len(meta['dataset_meta']['classes']) == 150

    # loaded as it is: the trained 36x36 position embedding bit for bit (bf16 widened), nothing resampled
    assert torch.equal(model.backbone.pos_embed.data, sd['backbone.pos_embed'].float())
    x = torch.randn(1, 3, 504, 504)
    with torch.no_grad():
        theirs_blocks, _ = internvit6b_blocks(sd, x, HEADS, r['out'])
        ours_blocks = model.backbone(x)
        for a, b in zip(ours_blocks, theirs_blocks):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        if r['head'] == 'linear':
            theirs = [internvl_linear_head(sd, theirs_blocks[0])]
            ours = [model.decode_head(list(ours_blocks))]
        else:
            pyramid = internvl_pyramid(sd, theirs_blocks)
            ours_pyramid = model.neck(list(ours_blocks))
            assert [tuple(p.shape[-2:]) for p in ours_pyramid] == [(144, 144), (72, 72), (36, 36), (18, 18)]
            for a, b in zip(ours_pyramid, pyramid):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
            theirs = [internvl_upernet_head(sd, pyramid), internvl_aux_head(sd, pyramid, r.get('aux_index', 1))]
            ours = [model.decode_head(list(ours_pyramid)), model.auxiliary_head(list(ours_pyramid))]
        for a, b in zip(ours, theirs):
            assert a.shape[1] == 150
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_deepspeed_module_container_loads_too(tmp_path):
    path = tmp_path / 'released.pth'
    write_seg_file(path, 'linear_frozen', container='module')
    model = build_tiny(RECIPES['linear_frozen']['config'], [6])
    meta = load_model_checkpoint(model, path)
    assert meta['converted_from'] == 'internvl-seg' and 'dataset_meta' not in meta  # no CLASSES without meta


@pytest.mark.parametrize('recipe,config,out,reason', [
    ('upernet_frozen', 'internvit_6b_linear_frozen_ade20k_504.py', [6],
     "the file has InternVL's 4-level pyramid"),
    ('linear_frozen', 'internvit_6b_linear_full_ade20k_504_1of16_5k.py', [7],
     'the file was trained on blocks [6] and the config reads blocks [7]'),
    ('linear_1of16', 'internvit_6b_linear_frozen_ade20k_504.py', [6],
     'the file was trained on blocks [7] and the config reads blocks [6]'),
])
def test_a_file_of_another_recipe_is_refused_with_the_reason(recipe, config, out, reason, tmp_path):
    path = tmp_path / 'released.pth'
    write_seg_file(path, recipe)
    model = build_tiny(config, out)
    with pytest.raises(ModelCheckpointError) as e:
        load_model_checkpoint(model, path)
    msg = str(e.value)
    assert reason in msg and str(path) in msg
    assert 'its config here: configs/segmentation/' + RECIPES[recipe]['config'] in msg


def test_position_grid_is_never_resampled(tmp_path):
    path = tmp_path / 'released.pth'
    write_seg_file(path, 'linear_frozen')
    model = build_tiny(RECIPES['linear_frozen']['config'], [6], **{'model.backbone.pretrain_size': 224})
    with pytest.raises(ModelCheckpointError, match=r'36x36 grid \(1297 entries\).*16x16.*pretrain_size=504'):
        load_model_checkpoint(model, path)


def test_converted_keys_are_the_ones_our_model_has(tmp_path):
    path = tmp_path / 'released.pth'
    sd, _ = write_seg_file(path, 'upernet_frozen')
    ckpt = read_model_checkpoint(path)
    model = build_tiny(RECIPES['upernet_frozen']['config'], [1, 3, 5, 7])
    assert set(ckpt['state_dict']) == set(model.state_dict())
    assert torch.equal(ckpt['state_dict']['neck.upsample_4x.1.weight'], sd['backbone.up1.1.weight'])
    # and back: the format maps both ways
    fmt = ckpt['source_format']
    assert fmt.from_ours(ckpt['state_dict']).keys() == sd.keys()


# ------------------------------------------------------------------ the classification head
CLS_IMG = 56  # 4x4 patches; the real head is at 224 px (16x16)


def build_classifier(pretrained, **model_options):
    cfg = Config.fromfile(os.path.join(ROOT, 'configs/classification/tiny/tiny_linear_probe_synthetic.py'))
    cfg.merge_from_dict({'model.backbone.arch': dict(TINY_ARCH, _delete_=True), 'model.num_classes': 1000,
                         'model.backbone.init_cfg': dict(_delete_=True, type='Pretrained', checkpoint=str(pretrained)),
                         'model.backbone.dtype': 'float32',  # compared in fp32
                         **model_options})
    from mmengine.registry import MODELS
    return MODELS.build(cfg.model).eval()


def write_pretrained_backbone(path):
    """InternViT-6B's released .pth layout (intern_vit_6b_224px.pth: our names), tiny, at the 56 px grid."""
    sd = {k: v.float() for k, v in random_state(backbone_keys(C, DEPTH, MLP, grid=CLS_IMG // 14, prefix=''),
                                                seed=1).items()}
    torch.save(sd, path)
    return sd


def test_released_classification_head_loads_and_scores_as_internvl(tmp_path, monkeypatch):
    backbone_sd = write_pretrained_backbone(tmp_path / 'intern_vit_6b_224px.pth')
    head_sd = random_state(cls_head_keys(C, 1000), seed=2)
    assert head_sd['head.weight'].shape == (1000, 2 * C) and head_sd['norm.weight'].dtype == torch.float32
    path = tmp_path / 'intern_vit_6b_224px_head.pth'
    write_cls_head_file(path, head_sd, CLS_IMG, DEPTH, C, HEADS, str(tmp_path / 'intern_vit_6b_224px.pth'),
                        monkeypatch)
    model = build_classifier(tmp_path / 'intern_vit_6b_224px.pth')
    meta = load_model_checkpoint(model, path)  # strict; the frozen backbone comes from its pretrained file
    assert meta['converted_from'] == 'internvl-cls'
    x = torch.randn(2, 3, CLS_IMG, CLS_IMG)
    with torch.no_grad():
        ours = model(x, mode='tensor')
        theirs = internvl_classifier(backbone_sd, head_sd, x, HEADS)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)

    info = read_model_checkpoint(path)['info']  # its pickled yacs config, read without yacs
    assert (info['img_size'], info['depth'], info['embed_dims'], info['cls_target']) == (56, DEPTH, C,
                                                                                         'cls_patch_concat')


def test_classification_head_refused_by_a_probe_without_affine_batchnorm(tmp_path, monkeypatch):
    write_pretrained_backbone(tmp_path / 'vit.pth')
    path = tmp_path / 'head.pth'
    write_cls_head_file(path, random_state(cls_head_keys(C, 1000)), CLS_IMG, DEPTH, C, HEADS, 'vit.pth', monkeypatch)
    model = build_classifier(tmp_path / 'vit.pth', **{'model.bn_affine': False})
    with pytest.raises(ModelCheckpointError, match=r"scale and shift \(InternVL's head\).*set bn_affine=True"):
        load_model_checkpoint(model, path)


# ------------------------------------------------------------------ through the tools
def test_tools_test_and_init_model_take_a_released_file_as_it_is(tmp_path):
    """tools/test.py CONFIG internvl_file.pth and apis.init_model, on the tiny linear config and synthetic data."""
    sys.path.insert(0, os.path.join(ROOT, 'tests'))
    from seg_utils import data_options, miou_of, run_tool

    from internvit_dense.apis import init_model
    from internvit_dense.datasets.synthetic_ade20k import generate_synthetic_ade20k
    data = tmp_path / 'data'
    generate_synthetic_ade20k(str(data), num_train=2, num_val=3, seed=0, progress=False, overwrite=True)
    # the tiny config's structure: 96 wide, 4 blocks, block 3 read, 112 px crops (8x8 grid)
    keys = seg_file_keys('linear', 96, 4, 384, grid=8)
    sd = random_state(keys)
    from mmseg.datasets import ADE20KDataset
    text = training_config_text('linear_frozen').replace('out_indices=[6]', 'out_indices=[2]')
    path = tmp_path / 'linear_intern_vit_6b_504_80k_ade20k_bs16_lr4e-5_frozen.pth'
    torch.save(dict(state_dict=sd, meta=dict(config=text, CLASSES=ADE20KDataset.METAINFO['classes'],
                                             PALETTE=ADE20KDataset.METAINFO['palette'])), path)
    config = 'configs/segmentation/tiny/tiny_linear_frozen_synthetic.py'
    proc = run_tool('test.py', config, path, '--work-dir', tmp_path / 'work',
                    *data_options(data, ['test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False']))
    assert 0 <= miou_of(proc.stdout) <= 100
    assert "loaded InternVL's segmentation (frozen backbone, BN + linear head on blocks [2]) checkpoint" in (
        proc.stdout + proc.stderr)

    model = init_model(os.path.join(ROOT, config), path)
    assert model.dataset_meta['classes'][0] == 'wall' and len(model.dataset_meta['classes']) == 150
    assert torch.equal(model.decode_head.bn.running_var, sd['decode_head.norm.running_var'])

    # the UperNet file into the linear config: refused, with the reason and the config to use
    upernet = tmp_path / 'upernet.pth'
    torch.save(dict(state_dict=random_state(seg_file_keys('upernet', 96, 4, 384, grid=8, ch=16, aux_ch=16)),
                    meta={}), upernet)
    with pytest.raises(ModelCheckpointError) as e:
        init_model(os.path.join(ROOT, config), upernet)
    assert "InternVL's 4-level pyramid (backbone.up1..up4) and the config none" in str(e.value)
    assert 'its config here: configs/segmentation/internvit_6b_upernet_frozen_ade20k_504.py' in str(e.value)


def test_a_damaged_checkpoint_is_named_with_what_to_do(tmp_path, capsys):
    """tools/test.py and init_model on a file that is not a checkpoint (it used to be 'UnpicklingError: Memo value
    not found' with no file named)."""
    from conftest import load_tool

    from internvit_dense.apis import init_model
    from internvit_dense.checkpoint.files import UnreadableCheckpointError
    junk = tmp_path / 'iter_80000.pth'
    junk.write_bytes(bytes(range(256)) * 4)
    config = os.path.join(ROOT, 'configs/segmentation/tiny/tiny_linear_frozen_synthetic.py')
    with pytest.raises(SystemExit) as e:
        load_tool('test').main([config, str(junk), '--work-dir', str(tmp_path / 'work')])
    assert str(e.value).startswith(f'cannot read checkpoint {junk}: not a PyTorch checkpoint')
    assert 'Download or save it again' in str(e.value) and 'does not fit' not in str(e.value)
    empty = tmp_path / 'empty.pth'
    empty.write_bytes(b'')
    with pytest.raises(UnreadableCheckpointError, match=f'checkpoint {empty} is empty'):
        init_model(config, empty)
