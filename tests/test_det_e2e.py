"""COCO-format instance segmentation end to end through tools/train.py and tools/test.py."""
import json
import os
import re

import pytest
import torch
from conftest import COCO_LEARN
from seg_utils import ROOT, data_options, run_tool

# The tiny ViT-Adapter Mask R-CNN: the variant that learns within a CPU-sized run (the simple-pyramid
# one, a plain ViT from scratch at stride 16, has not found the objects yet after 300 iterations).
CONFIG = 'configs/detection/tiny/tiny_adapter_mask-rcnn_fpn_synthetic.py'
NUM_VAL = COCO_LEARN['num_val']
# Measured on this 2-core machine (the same 160 / 24 images the shared coco_learn set holds): bbox AP 0.000
# untrained (AP50 0.001) -> 0.318-0.326 (AP50 0.81-0.82) after the 100-iteration tiny schedule, segm AP 0.000 ->
# 0.533-0.543 (two runs); since the backgrounds have stuff regions (sky, floor: the panoptic layout) 0.330 (AP50
# 0.768), segm 0.501 (one run). The thresholds keep a wide margin below what was measured.
MAX_UNTRAINED_AP = 0.02
MIN_BBOX_AP_GAIN = 0.12
MIN_SEGM_AP = 0.15


@pytest.fixture(scope='module')
def data_root(coco_learn):
    return coco_learn  # the test run's shared set (tests/conftest.py)


def det_options(data_root, extra=()):
    ann_file = os.path.join(data_root, 'annotations', 'instances_val2017.json')
    return data_options(data_root, [f'val_evaluator.ann_file={ann_file}', f'test_evaluator.ann_file={ann_file}',
                                    *extra])


def run(tool, *args, background=False):
    # One thread: on 2 cores that other jobs also use, two OpenMP threads made a tiny Mask R-CNN step
    # 10-20x slower (0.6-0.75 s -> 7-15 s), the threads waiting on each other at every small op.
    return run_tool(tool, *args, threads=1, background=background)


def coco_metrics(stdout: str) -> dict:
    found = dict(re.findall(r'^\s+(coco/\w+): (-?[\d.]+)$', stdout, re.M))
    assert 'coco/bbox_mAP' in found and 'coco/segm_mAP' in found, \
        f'no bbox/segm AP in the output of tools/test.py:\n{stdout[-2000:]}'
    return {k: float(v) for k, v in found.items()}


def untrained_checkpoint(config: str, path) -> None:
    """The model a training run of ``config`` starts from: built and initialised (init_weights) with the
    config's seed as mmengine's Runner does before the first iteration, and not trained at all."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmengine.runner import set_random_seed

    import internvit_dense.models  # noqa: F401
    cfg = Config.fromfile(os.path.join(ROOT, config))
    init_default_scope('mmdet')
    from mmdet.registry import MODELS
    set_random_seed(cfg.randomness.seed)
    model = MODELS.build(cfg.model)
    model.init_weights()
    torch.save({'state_dict': model.state_dict(), 'meta': {'iter': 0}}, path)


def test_tiny_mask_rcnn_learns_and_tools_report_bbox_and_segm_ap(data_root, tmp_path):
    untrained = tmp_path / 'iter_0.pth'
    untrained_checkpoint(CONFIG, untrained)
    # the untrained model's score, beside the training (one thread each)
    untrained_test = run('test.py', CONFIG, untrained, '--work-dir', tmp_path / 'work0', *det_options(data_root),
                         background=True)

    work = tmp_path / 'work'
    # evaluation is left to tools/test.py below: none during training (val_begin after the last iteration)
    run('train.py', CONFIG, '--work-dir', work, *det_options(data_root, ['train_cfg.val_begin=1000']))
    before = coco_metrics(untrained_test().stdout)
    ckpt = open(work / 'last_checkpoint').read().strip()
    assert ckpt.endswith('iter_100.pth')
    proc = run('test.py', CONFIG, ckpt, '--work-dir', work, '--out', tmp_path / 'out', '--show-dir',
                    tmp_path / 'vis', *det_options(data_root))
    after = coco_metrics(proc.stdout)
    print(f'tiny adapter Mask R-CNN: bbox AP {before["coco/bbox_mAP"]:.3f} untrained -> '
          f'{after["coco/bbox_mAP"]:.3f} trained (AP50 {after["coco/bbox_mAP_50"]:.3f}), '
          f'segm AP {before["coco/segm_mAP"]:.3f} -> {after["coco/segm_mAP"]:.3f}')
    assert before['coco/bbox_mAP'] <= MAX_UNTRAINED_AP
    assert after['coco/bbox_mAP'] >= before['coco/bbox_mAP'] + MIN_BBOX_AP_GAIN
    assert after['coco/segm_mAP'] >= MIN_SEGM_AP

    # --out: COCO-format results, one record per detection, on the val images
    for kind in ('bbox', 'segm'):
        with open(tmp_path / 'out' / f'coco_results.{kind}.json') as f:
            results = json.load(f)
        assert results and {'image_id', 'category_id', 'score', 'bbox'} <= set(results[0])
        assert kind == 'bbox' or 'segmentation' in results[0]
    # --show-dir: one overlay per val image
    pngs = [f for _, _, fs in os.walk(tmp_path / 'vis') for f in fs if f.endswith('.png')]
    assert len(pngs) == NUM_VAL
