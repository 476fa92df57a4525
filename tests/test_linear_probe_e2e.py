"""End to end on the synthetic set: the benchmark tool (extract -> sweep -> eval) and the recipe config
through tools/train.py and tools/test.py, which must agree with the tool on the same classifier."""
import json
import os
import re

import pytest
import torch
from conftest import ROOT, TINY_6B, load_tool, tiny_vit

from internvit_dense.checkpoint import save_checkpoint
from internvit_dense.datasets.synthetic_imagenet import generate_synthetic_imagenet

ARCH = dict(TINY_6B)  # the project's tiny architecture
NUM_CLASSES = 6
ROW = re.compile(r'^(ImageNet-[\w-]+(?: val)?)\s+(\d+)\s+(\d+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$', re.M)


pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    """Synthetic data, a 'pretrained' tiny backbone in OpenGVLab's .pth format, and its feature cache."""
    base = tmp_path_factory.mktemp('lp_e2e')
    data = str(base / 'data')
    generate_synthetic_imagenet(data, num_classes=NUM_CLASSES, train_per_class=24, val_per_class=10,
                                variant_per_class=4, size=(32, 48), progress=False)
    ckpt = str(base / 'vit.pth')
    save_checkpoint(tiny_vit(ARCH, img_size=28, pretrain_size=28), ckpt)
    tool = load_tool('linear_probe')
    tool.main(['extract', '--data-root', data, '--checkpoint', ckpt, '--arch', json.dumps(ARCH), '--img-size', '28',
               '--pretrain-size', '28', '--blocks', 'last2', '--cache-root', str(base / 'cache'), '--workers', '0',
               '--batch-size', '32',
               '--chunk-size', '64', '--dtype', 'float32', '--quiet'])
    (cache,) = [str(p) for p in (base / 'cache').iterdir()]
    return dict(base=base, data=data, ckpt=ckpt, cache=cache, tool=tool)


def table(text):
    return {m.group(1): dict(images=int(m.group(2)), scored=int(m.group(3)), classes=int(m.group(4)),
                             top1=float(m.group(5))) for m in ROW.finditer(text)}


def test_extract_sweep_eval_prints_the_table(setup, capsys):
    tool, cache = setup['tool'], setup['cache']
    tool.main(['sweep', '--cache', cache, '--n-last', '1,2', '--holdout', '0.2', '--batch-size', '32', '--quiet'])
    tool.main(['eval', '--cache', cache])
    out = capsys.readouterr().out
    rows = table(out)
    assert list(rows) == ['ImageNet-1k val', 'ImageNet-ReaL', 'ImageNet-V2', 'ImageNet-A', 'ImageNet-R',
                          'ImageNet-Sketch']
    assert rows['ImageNet-1k val']['images'] == NUM_CLASSES * 10
    assert rows['ImageNet-ReaL']['scored'] < rows['ImageNet-ReaL']['images']  # empty label sets skipped
    assert rows['ImageNet-A']['classes'] < NUM_CLASSES and rows['ImageNet-R']['classes'] < NUM_CLASSES
    assert rows['ImageNet-1k val']['top1'] > 2 * 100 / NUM_CLASSES  # the probe learnt the task
    assert 'sweep finished: 32 classifiers in one pass' in out

    sweep_dir = os.path.join(cache, 'sweep')
    results = json.load(open(os.path.join(sweep_dir, 'eval.json')))['results']
    assert [r['variant'] for r in results] == ['in1k', 'real', 'v2', 'a', 'r', 'sketch']
    assert results[0]['top1'] == pytest.approx(rows['ImageNet-1k val']['top1'], abs=0.01)
    with open(os.path.join(sweep_dir, 'accuracy_vs_lr.png'), 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_recipe_config_through_the_runner_agrees_with_the_cache(setup, capsys):
    base, data, ckpt = setup['base'], setup['data'], setup['ckpt']
    config = base / 'recipe_tiny.py'
    pipelines = (
        "train_pipeline = [dict(type='LoadImageFromFile'), dict(type='RandomResizedCrop', size=28),\n"
        "                  dict(type='RandomFlip', prob=0.5, direction='horizontal'), dict(type='PackClsInputs')]\n"
        "test_pipeline = [dict(type='LoadImageFromFile'), dict(type='ResizeShortEdge', size=28),\n"
        "                 dict(type='CenterCrop', crop_size=28), dict(type='PackClsInputs')]\n")
    loader = "num_workers=0, persistent_workers=False, dataset=dict(data_root='{}', pipeline={})"
    config.write_text(
        f"_base_ = ['{ROOT}/configs/classification/tiny/tiny_linear_probe_synthetic.py']\n" + pipelines +
        f"model = dict(num_classes={NUM_CLASSES}, backbone=dict(arch=dict(_delete_=True, **{ARCH!r}), img_size=28,\n"
        f"             pretrain_size=28, init_cfg=dict(_delete_=True, type='Pretrained', checkpoint='{ckpt}')))\n"
        f"train_dataloader = dict(batch_size=32, {loader.format(data, 'train_pipeline')})\n"
        f"val_dataloader = dict({loader.format(data, 'test_pipeline')})\n"
        "test_dataloader = val_dataloader\n"
        "train_cfg = dict(max_epochs=2)\n"
        "visualizer = dict(vis_backends=[dict(type='LocalVisBackend')])\n")
    work = base / 'work'
    load_tool('train').main([str(config), '--work-dir', str(work)])
    last = open(work / 'last_checkpoint').read().strip()
    saved = torch.load(last, map_location='cpu', weights_only=False)['state_dict']
    assert not any(k.startswith('backbone.') for k in saved)  # head only: the backbone is the pretrained file

    capsys.readouterr()
    load_tool('test').main([str(config), last, '--work-dir', str(work)])
    runner_top1 = float(re.search(r'accuracy/top1: ([\d.]+)', capsys.readouterr().out).group(1))

    setup['tool'].main(['eval', '--cache', setup['cache'], '--recipe-checkpoint', last, '--out', str(base / 'r')])
    out = capsys.readouterr().out
    assert f"checked against the cache: architecture, blocks [{ARCH['depth'] - 1}], 28 px crop, backbone weights (vit.pth)" in out
    assert 'NOT VERIFIED' not in out
    cached_top1 = table(out)['ImageNet-1k val']['top1']
    print(f'IN-1k val top-1: runner {runner_top1:.2f}, cached features {cached_top1:.2f}')
    # Same images, same preprocessing, same head: the cached path scores what the runner scores.
    assert cached_top1 == pytest.approx(runner_top1, abs=100 / (NUM_CLASSES * 10) + 1e-6)
    assert runner_top1 > 100 / NUM_CLASSES


def test_internvl_released_head_scores_through_test_py_and_the_cache(setup, capsys, monkeypatch):
    """InternVL's intern_vit_6b_224px_head.pth layout ({'model': {norm.*, head.*}, 'config': yacs CfgNode, ...}),
    as it is, through tools/test.py with the recipe config and through linear_probe.py eval --recipe-checkpoint."""
    from internvl_reference import cls_head_keys, random_state, write_cls_head_file
    base, data, ckpt = setup['base'], setup['data'], setup['ckpt']
    head = random_state(cls_head_keys(ARCH['embed_dims'], NUM_CLASSES), seed=3)
    path = base / 'intern_vit_6b_224px_head.pth'
    write_cls_head_file(path, head, 28, ARCH['depth'], ARCH['embed_dims'], ARCH['num_heads'], ckpt, monkeypatch,
                        mlp_ratio=ARCH['mlp_dims'] / ARCH['embed_dims'])
    config = base / 'recipe_tiny_internvl.py'
    config.write_text(
        f"_base_ = ['{ROOT}/configs/classification/tiny/tiny_linear_probe_synthetic.py']\n"
        "test_pipeline = [dict(type='LoadImageFromFile'), dict(type='ResizeShortEdge', size=28),\n"
        "                 dict(type='CenterCrop', crop_size=28), dict(type='PackClsInputs')]\n"
        f"model = dict(num_classes={NUM_CLASSES}, backbone=dict(arch=dict(_delete_=True, **{ARCH!r}), img_size=28,\n"
        f"             pretrain_size=28, init_cfg=dict(_delete_=True, type='Pretrained', checkpoint='{ckpt}')))\n"
        f"val_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(data_root='{data}', "
        "pipeline=test_pipeline))\n"
        "test_dataloader = val_dataloader\n"
        "visualizer = dict(vis_backends=[dict(type='LocalVisBackend')])\n")
    capsys.readouterr()
    load_tool('test').main([str(config), str(path), '--work-dir', str(base / 'work_internvl')])
    runner_top1 = float(re.search(r'accuracy/top1: ([\d.]+)', capsys.readouterr().out).group(1))

    setup['tool'].main(['eval', '--cache', setup['cache'], '--recipe-checkpoint', str(path),
                        '--out', str(base / 'r_internvl')])
    out = capsys.readouterr().out
    assert f"checked against the cache: architecture, blocks [{ARCH['depth'] - 1}], 28 px crop, backbone weights (vit.pth)" in out
    cached_top1 = table(out)['ImageNet-1k val']['top1']
    print(f"InternVL-layout head, IN-1k val top-1: runner {runner_top1:.2f}, cached features {cached_top1:.2f}")
    assert cached_top1 == pytest.approx(runner_top1, abs=100 / (NUM_CLASSES * 10) + 1e-6)
