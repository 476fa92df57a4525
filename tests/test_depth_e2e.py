"""Depth end to end on the synthetic NYU set: tools/train.py, tools/test.py (metrics, --show-dir, --tta),
tools/infer.py and mmseg.apis.inference_model, against the best constant predictor.

The constant is the training set's median depth (the best constant for the log metrics), scored with the
same metric (Eigen crop, per-image averages). What the tiny configs reached on this 2-core machine
(ITERS iterations of 4 images, seed 0) is in docs/depth_estimation.md; MAX_RMSE_RATIO keeps a margin above it.
The tools run in this process (no interpreter start and imports per tool), without data workers; the DPT
run's plain metrics are its own validation at the last iteration (the same DepthMetric on the same test
images as tools/test.py), so that tools/test.py runs once for it, with --tta.
"""
import json
import os
import re

import numpy as np
import pytest
from conftest import load_tool
from PIL import Image
from seg_utils import data_options

from internvit_dense.datasets.depth import constant_depth_metrics
from internvit_dense.datasets.synthetic_nyu import generate_synthetic_nyu

TINY = 'configs/depth/tiny/tiny_{}_synthetic.py'
ITERS = 80  # configs/_base_/schedules/schedule_depth_tiny.py
NUM_TRAIN, NUM_TEST = 200, 16
# model RMSE / constant RMSE must stay below this (measured: see docs/depth_estimation.md)
MAX_RMSE_RATIO = {'linear': 0.8, 'dpt': 0.8}
METRICS = ('d1', 'd2', 'd3', 'abs_rel', 'sq_rel', 'rmse', 'rmse_log', 'log10', 'silog')
NO_WORKERS = [f'{split}_dataloader.{key}' for split in ('train', 'val', 'test')
              for key in ('num_workers=0', 'persistent_workers=False')]


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp('synthetic_nyu')
    summary = generate_synthetic_nyu(str(root), num_train=NUM_TRAIN, num_test=NUM_TEST, seed=0, progress=False)
    baseline = constant_depth_metrics(str(root), summary['train_median_depth'], split='test', crop_type='eigen',
                                      min_depth_eval=1e-3, max_depth_eval=10.0)
    return root, summary, baseline


def metrics_of(stdout: str) -> dict:
    found = {k: float(v) for k, v in re.findall(r'^\s+(\w+): ([-\d.e]+)$', stdout, re.M) if k in METRICS}
    assert set(found) == set(METRICS), f'tools/test.py did not print every depth metric:\n{stdout[-2000:]}'
    return found


def run(tool, capsys, *args):
    """tools/<tool>.py's main in this process; its stdout."""
    capsys.readouterr()
    load_tool(tool).main([str(a) for a in args])
    return capsys.readouterr().out


def train(kind, root, work, capsys, validate):
    """tools/train.py on the tiny config; validation at the last iteration only if ``validate``."""
    config = TINY.format(kind)
    # a visualizer of its own (mmengine keeps one per name in a process): its scalars go into this work dir
    run('train', capsys, config, '--work-dir', work,
        *data_options(root, NO_WORKERS + [f'visualizer.name=depth_e2e_{kind}_train'] +
                      ([] if validate else [f'train_cfg.val_begin={ITERS + 1}'])))
    ckpt = open(work / 'last_checkpoint').read().strip()
    assert ckpt.endswith(f'iter_{ITERS}.pth')
    return config, ckpt


def validation_metrics(work) -> dict:
    """The metrics the training's validation logged (vis_data/scalars.json) at its last iteration."""
    (scalars,) = work.glob('*/vis_data/scalars.json')
    logged = [json.loads(line) for line in scalars.read_text().splitlines()]
    found = [e for e in logged if 'rmse' in e]
    assert found and found[-1]['step'] == ITERS, logged[-3:]
    assert set(METRICS) <= set(found[-1]), found[-1]
    return {k: found[-1][k] for k in METRICS}


def report(kind, metrics, baseline, median):
    print(f'tiny {kind}: ' + ', '.join(f'{k} {metrics[k]:.4f}' for k in METRICS))
    print(f'constant {median:.3f} m: ' + ', '.join(f'{k} {baseline[k]:.4f}' for k in METRICS))
    print(f"RMSE ratio model / constant: {metrics['rmse'] / baseline['rmse']:.3f}")


def test_linear_learns_depth_and_the_tools_write_depth_maps(data, tmp_path, capsys):
    root, summary, baseline = data
    config, ckpt = train('linear', root, tmp_path / 'work', capsys, validate=False)
    # a visualizer of its own: mmengine keeps one instance per name in a process, and the training's ('visualizer')
    # would draw into the training's work dir
    out = run('test', capsys, config, ckpt, '--work-dir', tmp_path / 'work', '--show-dir', tmp_path / 'vis',
              *data_options(root, NO_WORKERS + ['visualizer.name=depth_e2e_show_dir']))
    metrics = metrics_of(out)
    with capsys.disabled():
        report('linear', metrics, baseline, summary['train_median_depth'])
    assert metrics['rmse'] < MAX_RMSE_RATIO['linear'] * baseline['rmse']
    assert metrics['abs_rel'] < baseline['abs_rel'] and metrics['d1'] > baseline['d1']
    shown = [f for _, _, fs in os.walk(tmp_path / 'vis') for f in fs if f.endswith('.png')]
    assert len(shown) == NUM_TEST

    # tools/infer.py: a 16-bit depth PNG (millimetres) and a coloured one per image
    images = sorted(os.listdir(root / 'images' / 'test'))[:2]
    out = tmp_path / 'infer'
    run('infer', capsys, config, ckpt, *[root / 'images' / 'test' / f for f in images], '--out-dir', out, '--quiet')
    for name in images:
        stem = name[:-4]
        depth = np.asarray(Image.open(out / f'{stem}_depth.png'))
        colour = Image.open(out / f'{stem}_depth_color.png')
        assert depth.dtype == np.uint16 and depth.shape == (120, 160)
        assert 1 <= depth.min() and depth.max() <= 10000  # millimetres inside the head's range
        assert colour.mode == 'RGB' and colour.size[1] == 120 and colour.size[0] > 2 * 160

    # the same model through mmseg's own inference API
    from mmseg.apis import inference_model

    from internvit_dense.apis import init_model
    model = init_model(config, ckpt)
    result = inference_model(model, str(root / 'images' / 'test' / images[0]))
    pred = result.pred_depth_map.data[0].numpy()
    assert pred.shape == (120, 160)
    assert np.abs(pred * 1000 - np.asarray(Image.open(out / f'{images[0][:-4]}_depth.png'))).max() <= 1


def test_dpt_learns_depth_with_flip_tta(data, tmp_path, capsys):
    root, summary, baseline = data
    config, ckpt = train('dpt', root, tmp_path / 'work', capsys, validate=True)
    metrics = validation_metrics(tmp_path / 'work')
    with capsys.disabled():
        report('dpt', metrics, baseline, summary['train_median_depth'])
    assert metrics['rmse'] < MAX_RMSE_RATIO['dpt'] * baseline['rmse']
    out = run('test', capsys, config, ckpt, '--work-dir', tmp_path / 'work', '--tta', *data_options(root, NO_WORKERS))
    assert 'with test-time augmentation (2 views per image merged)' in out
    tta = metrics_of(out)
    with capsys.disabled():
        print(f"tiny dpt with flip TTA: rmse {tta['rmse']:.4f}")
    assert tta['rmse'] < MAX_RMSE_RATIO['dpt'] * baseline['rmse']
