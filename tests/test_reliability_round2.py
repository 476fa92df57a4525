"""Reliability, second round (issue 20): exact resume in the configs people run (validation and save_best on),
no wrapped labels, no NaN model scored, every bad input named. One test (or a part of one) per case of the issue,
numbered as there.
"""
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
from argparse import Namespace

import numpy as np
import pytest
import torch
from conftest import TINY_300M, load_tool, tiny_vit
from PIL import Image
from seg_utils import ROOT, TINY, data_options, load_ckpt, run_command, run_tool
from test_linear_probe_cache import identity, run, train_items  # noqa: F401  (a fixture)
from test_reliability import QUICK, data, limit_file_size, opts  # noqa: F401  (a fixture)
from test_resume_exact import differing, kill_config
from test_resume_exact import train as train_tool

LINEAR = TINY.format('linear_frozen')
FULL = TINY.format('upernet_full')


def dead_pid() -> int:
    """The id of a process that has exited: what a killed writer's id looks like afterwards."""
    proc = subprocess.Popen(['true'])
    proc.wait()
    return proc.pid


# ------------------------------------------------------------------- 1 + 2: exact resume, validation and save_best on
# Validation every 2 iterations, a checkpoint every iteration, the best mIoU kept: the run is killed right after
# iteration 4's checkpoint, before iteration 4's validation (KillAfterCheckpoint, at_iter=4). The linear head
# (frozen backbone: the quickest run) with dropout: its masks come from torch's generator, which the validation
# data loader's iterator draws from.
WITH_VALIDATION = ['train_cfg.max_iters=5', 'train_cfg.val_interval=2', 'default_hooks.checkpoint.interval=1',
                   'default_hooks.checkpoint.max_keep_ckpts=10', 'default_hooks.checkpoint.save_best=mIoU',
                   'train_dataloader.batch_size=2', 'train_dataloader.num_workers=0',
                   'train_dataloader.persistent_workers=False', 'val_dataloader.num_workers=0',
                   'val_dataloader.persistent_workers=False', 'model.decode_head.dropout_ratio=0.3',
                   'optim_wrapper.optimizer.lr=0.5']  # within 5 warm-up iterations the scores move: a best to rank


def best_record(work):
    info = load_ckpt(work / 'iter_5.pth')['message_hub']['runtime_info']
    return os.path.basename(info['best_ckpt']), info['best_score']


def test_resume_at_and_between_validations_with_save_best_is_bit_identical(data, tmp_path):
    options = data_options(data, WITH_VALIDATION)[1:]
    straight = tmp_path / 'straight'
    straight_done = train_tool(LINEAR, straight, options, background=True)  # beside the killed run: 1 thread each
    killed = tmp_path / 'killed'
    proc = train_tool(kill_config(tmp_path, LINEAR), killed, options, check=False, pythonpath=tmp_path)
    log = straight_done().stdout
    scores = [float(m) for m in re.findall(r'Iter\(val\) \[2/2\]\s+aAcc: [\d.]+\s+mIoU: ([\d.]+)', log)]
    assert len(scores) == 3 and len(set(scores)) == 3, scores  # validations at 2, 4, 5: a best to rank
    assert proc.returncode != 0 and (killed / 'iter_4.pth').is_file() and not (killed / 'iter_5.pth').exists()

    # between two validations: as if killed during iteration 4, before its checkpoint
    between = tmp_path / 'between'
    shutil.copytree(killed, between)
    (between / 'iter_4.pth').unlink()
    (between / 'last_checkpoint').write_text(str(between / 'iter_3.pth'))
    stray = between / 'best_mIoU_iter_1.pth'  # a best checkpoint no record names
    shutil.copy(between / 'iter_1.pth', stray)
    # 2: a checkpoint write killed half way: the partial file of a process that no longer runs
    partial = killed / f'.partial-{dead_pid()}-iter_5.pth'
    partial.write_bytes(b'\0' * 4096)

    resumes = {work: train_tool(LINEAR, work, options, '--resume', background=True) for work in (killed, between)}
    for work, at in ((killed, 4), (between, 3)):
        proc = resumes[work]()
        out = proc.stdout + proc.stderr
        (tmp_path / f'{work.name}.out').write_text(out)
        assert f'resumed epoch: 0, iter: {at}' in out
        assert differing(load_ckpt(straight / 'iter_5.pth'), load_ckpt(work / 'iter_5.pth')) == [], work
        assert best_record(work) == best_record(straight), work
        bests = sorted(p.name for p in work.glob('best_*.pth') if p != stray)
        assert bests == sorted(p.name for p in straight.glob('best_*.pth')), work
        if work == killed:
            # iteration 4's validation, lost with the kill, is run on resume, as the straight run ran it
            assert 'resumed at iteration 4, whose checkpoint is written before its validation: validating it' in out
            assert not partial.exists()
            assert f'removed {partial} (0.0 MiB): the unfinished write of iter_5.pth by process' in out
        else:
            assert 'validating it now' not in out
            assert f'no record of this run names: {stray.name}' in out and stray.exists()


# ------------------------------------------------------------------- 3, 8, 9: label files
def one_pair(root, image, label, name='a'):
    """An ADE20K-layout folder with one training image and its label file."""
    for kind in ('images', 'annotations'):
        (root / kind / 'training').mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(root / 'images' / 'training' / f'{name}.jpg')
    label_path = root / 'annotations' / 'training' / f'{name}.png'
    Image.fromarray(label).save(label_path)
    return label_path


def first_training_sample(root):
    from mmengine.config import Config
    from mmengine.registry import DATASETS, init_default_scope
    import internvit_dense.datasets  # noqa: F401  the data set and transforms
    cfg = Config.fromfile(os.path.join(ROOT, LINEAR))
    init_default_scope('mmseg')
    return DATASETS.build(dict(cfg.train_dataloader.dataset, data_root=str(root)))[0]


def test_a_16_bit_label_out_of_the_8_bit_range_is_named_not_wrapped(tmp_path):
    rgb = np.full((40, 48, 3), 120, np.uint8)
    label = np.full((40, 48), 5, np.uint16)
    label[10:20, 10:20] = 300  # 300 = 44 mod 256: mmseg's cast made it class 43
    path = one_pair(tmp_path, rgb, label)
    assert Image.open(path).mode.startswith('I')  # really a 16-bit PNG
    with pytest.raises(ValueError, match=f'label map {path} is a 16-bit file holding 300: label values must lie in '
                                         '0-255'):
        first_training_sample(tmp_path)
    # a 16-bit file whose values are 8-bit ones loads as mmseg loads it
    one_pair(tmp_path, rgb, np.full((40, 48), 5, np.uint16))
    assert set(np.unique(first_training_sample(tmp_path)['data_samples'].gt_sem_seg.data.numpy())) <= {4, 255}


def test_an_rgb_label_is_named_as_not_single_channel(tmp_path):
    path = one_pair(tmp_path, np.full((40, 48, 3), 120, np.uint8), np.full((40, 48, 3), 7, np.uint8))
    with pytest.raises(ValueError, match=f'label map {path} has 3 channels \\(40x48x3\\): a label map must be '
                                         'single-channel'):
        first_training_sample(tmp_path)


def test_a_one_pixel_image_and_label_load(tmp_path):
    one_pair(tmp_path, np.full((1, 1, 3), 120, np.uint8), np.full((1, 1), 5, np.uint8))
    sample = first_training_sample(tmp_path)
    seg = sample['data_samples'].gt_sem_seg.data
    assert seg.shape[-2:] == sample['inputs'].shape[-2:] and set(seg.unique().tolist()) <= {4, 255}


# ------------------------------------------------------------------- 4: a NaN checkpoint is never scored
def test_test_and_infer_refuse_a_checkpoint_holding_nan(data, tmp_path):
    from internvit_dense.apis import init_model
    state = init_model(LINEAR).state_dict()
    state['decode_head.conv_seg.weight'][0, 0] = float('nan')
    checkpoint = tmp_path / 'nan.pth'
    torch.save({'state_dict': state}, checkpoint)
    expected = f'checkpoint {checkpoint} holds NaN/Inf in 1 tensors (decode_head.conv_seg.weight)'
    proc = run_tool('test.py', LINEAR, checkpoint, '--work-dir', tmp_path / 't', *data_options(data, QUICK[3:5]),
                    check=False, threads=1)
    assert proc.returncode != 0 and expected in proc.stderr and 'test results of' not in proc.stdout, \
        proc.stderr[-2000:]
    Image.fromarray(np.full((30, 40, 3), 100, np.uint8)).save(tmp_path / 'x.jpg')
    with pytest.raises(SystemExit, match=expected.replace('(', '\\(').replace(')', '\\)')):
        load_tool('infer').main([LINEAR, str(checkpoint), str(tmp_path / 'x.jpg'), '--out-dir', str(tmp_path / 'o'),
                                 '--quiet'])
    assert not (tmp_path / 'o').exists()


# ------------------------------------------------------------------- 5: memory plan arguments
@pytest.mark.parametrize('args,message', [
    (['--gpus', '0'], '--gpus must be a whole number of at least 1'),
    (['--gpus', '-3'], '--gpus must be a whole number of at least 1'),
    (['--gpu-memory', '-1'], '--gpu-memory must be a positive number of GB'),
    (['--batch-size', '0'], '--batch-size must be a whole number of at least 1'),
    (['--deepspeed', '2', '--gpus', '0'], '--gpus must be a whole number of at least 1'),
])
def test_memory_plan_refuses_arguments_that_plan_nothing(args, message):
    tool = load_tool('memory_plan')
    with pytest.raises(SystemExit, match=message):
        tool.main([LINEAR, *args])
    from internvit_dense.memory_plan import plan_config
    with pytest.raises(ValueError, match='--gpus must be'):
        plan_config(None, gpus=0)


# ------------------------------------------------------------------- 6: a truncated feature cache
def test_a_truncated_feature_cache_is_named_and_extracted_again(train_items, tmp_path, one_thread):  # noqa: F811
    from internvit_dense.linear_probe.cache import CacheError, FeatureCache
    from test_linear_probe_cache import ARCH, IMG
    model = tiny_vit(ARCH, img_size=IMG, pretrain_size=IMG, frozen=True)
    root = str(tmp_path / 'cache')
    run(FeatureCache(root, identity()), train_items, model, 1)
    whole = {k: np.array(v) for k, v in FeatureCache(root).load('train').arrays.items()}
    victim = tmp_path / 'cache' / 'train' / 'cls_block01.npy'
    size = victim.stat().st_size
    victim.write_bytes(victim.read_bytes()[:size - 100])  # an interrupted copy
    with pytest.raises(CacheError, match=f'{victim} is truncated \\({size - 100} bytes, its float32 \\(21, '
                                         f'{ARCH["embed_dims"]}\\) array needs {size}\\)'):
        FeatureCache(root).load('train')
    computed = []
    with pytest.warns(UserWarning, match=f"split 'train' of the feature cache .* is damaged: {victim} is truncated"):
        run(FeatureCache(root, identity()), train_items, model, 1, computed.append)
    assert sum(computed) == 21  # extracted again, all of it
    again = FeatureCache(root).load('train')
    for key, value in whole.items():
        np.testing.assert_array_equal(np.asarray(again.arrays[key]), value)


# ------------------------------------------------------------------- 7, 11, 12: configs and resume
def load(config, *options, work_dir=None):
    from internvit_dense.engine.cli import add_common_args, load_config
    import argparse
    parser = argparse.ArgumentParser()
    add_common_args(parser)
    args = parser.parse_args([str(config), *(['--work-dir', str(work_dir)] if work_dir else []),
                              *(['--cfg-options', *options] if options else [])])
    return load_config(args)


def test_misspelt_nested_keys_warn():
    with pytest.warns(UserWarning) as caught:
        load(os.path.join(ROOT, LINEAR), 'env_cfg.cudnn_benchmarkk=True', 'val_evaluator.iou_metricss=[mDice]',
             'default_hooks.logger.intervall=3', 'train_cfg.val_intervall=5')
    notes = ' '.join(str(w.message) for w in caught)
    assert "env_cfg.cudnn_benchmarkk is not an argument mmengine reads; did you mean env_cfg.cudnn_benchmark?" in notes
    assert 'val_evaluator.iou_metricss is not an argument IoUMetric reads; did you mean val_evaluator.iou_metrics?' \
        in notes
    assert 'default_hooks.logger.intervall is not an argument LoggerHook reads; did you mean ' \
           'default_hooks.logger.interval?' in notes
    assert 'train_cfg.val_intervall is not an argument IterBasedTrainLoop reads' in notes
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # the shipped configs' own keys are all read
        for config in (LINEAR, FULL, 'configs/detection/tiny/tiny_mask-rcnn_fpn_synthetic.py'):
            load(os.path.join(ROOT, config))


def test_unknown_checkpoint_hook_argument_fails_when_built():
    from internvit_dense.engine.hooks import SafeCheckpointHook
    with pytest.raises(TypeError, match="default_hooks.checkpoint: unknown argument 'intervall' \\(did you mean "
                                        "'interval'\\?\\)"):
        SafeCheckpointHook(interval=5, intervall=5, by_epoch=False)
    SafeCheckpointHook(interval=5, by_epoch=False, filename_tmpl='it_{}.pth', save_best='mIoU', rule='greater')


def test_option_types_and_a_file_as_work_dir_are_named(tmp_path):
    with pytest.raises(SystemExit, match="--cfg-options train_cfg.max_iters='abc': the config holds a number there "
                                         "\\(300\\)"):
        load(os.path.join(ROOT, LINEAR), 'train_cfg.max_iters=abc')
    (tmp_path / 'afile').write_text('x')
    with pytest.raises(SystemExit, match=f'--work-dir {tmp_path}/afile is a file, not a folder'):
        load(os.path.join(ROOT, LINEAR), work_dir=tmp_path / 'afile')


@pytest.fixture(scope='module')
def trained_linear(data, tmp_path_factory):
    work = tmp_path_factory.mktemp('linear2')
    train_tool(LINEAR, work, data_options(data, opts(2, 2))[1:])
    return work


def test_resume_past_the_end_or_with_another_config_is_refused(data, trained_linear, tmp_path):
    work = tmp_path / 'w'
    shutil.copytree(trained_linear, work)
    proc = train_tool(LINEAR, work, data_options(data, opts(1, 1))[1:], '--resume', check=False)
    assert proc.returncode != 0 and 'training finished' not in proc.stdout
    assert f'nothing trained: the checkpoint resumed from ({work}/iter_2.pth) is at iteration 2 and ' \
           'train_cfg.max_iters=1: nothing to train' in proc.stderr, proc.stderr[-2000:]

    proc = train_tool(FULL, work, data_options(data, opts(4, 2))[1:], '--resume', check=False)
    assert proc.returncode != 0
    assert f"--resume: {work}/iter_2.pth is not a checkpoint of {FULL}'s model:" in proc.stderr, proc.stderr[-2000:]
    assert 'tensors missing from the file (' in proc.stderr and 'different number of parameter groups' \
        not in proc.stderr


# ------------------------------------------------------------------- 10: spaces in --cfg-options
def test_cfg_options_keep_spaces_in_a_path(tmp_path):
    cfg = load(os.path.join(ROOT, LINEAR), 'train_dataloader.dataset.data_root=/data/ADE 20k',
               'val_dataloader.dataset.data_root="/data/Ädé 20k/x"', 'model.decode_head.in_index=[0, 1]',
               "train_cfg.max_iters=7", 'model.backbone.frozen=False')
    assert cfg.train_dataloader.dataset.data_root == '/data/ADE 20k'
    assert cfg.val_dataloader.dataset.data_root == '/data/Ädé 20k/x'
    assert cfg.model.decode_head.in_index == [0, 1] and cfg.train_cfg.max_iters == 7
    assert cfg.model.backbone.frozen is False


# ------------------------------------------------------------------- 13: config.json that disagrees with the weights
def test_from_pretrained_says_the_architecture_came_from_config_json(tmp_path):
    from internvit_dense.checkpoint import CheckpointError, FORMAT_OPENGVLAB_HF, save_checkpoint
    from internvit_dense.models.backbones import InternViT
    save_checkpoint(tiny_vit(TINY_300M), str(tmp_path / 'hf'), fmt=FORMAT_OPENGVLAB_HF)
    config = json.loads((tmp_path / 'hf' / 'config.json').read_text())
    config['hidden_size'] = config['hidden_size'] + 32
    (tmp_path / 'hf' / 'config.json').write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=f"has shape .* but the model expects .*the architecture came from "
                                              f"{tmp_path}/hf/config.json"):
        InternViT.from_pretrained(str(tmp_path / 'hf'))


# ------------------------------------------------------------------- 9, 14: tools/infer.py on odd inputs, a full disk
@pytest.fixture(scope='module')
def linear_checkpoint(tmp_path_factory):
    from internvit_dense.apis import init_model
    path = tmp_path_factory.mktemp('lin') / 'random.pth'
    torch.save({'state_dict': init_model(LINEAR).state_dict()}, path)
    return path


def test_infer_names_and_skips_what_it_cannot_predict(linear_checkpoint, tmp_path, capsys):
    inputs = tmp_path / 'in'
    inputs.mkdir()
    Image.fromarray(np.full((60, 80, 3), 90, np.uint8)).save(inputs / 'good.jpg')
    Image.fromarray(np.full((3, 1000, 3), 90, np.uint8)).save(inputs / 'thin.png')
    Image.fromarray(np.full((1, 1, 3), 90, np.uint8)).save(inputs / 'dot.png')
    (inputs / 'fake.JPG').write_text('not an image')
    with pytest.raises(SystemExit) as stop:
        load_tool('infer').main([LINEAR, str(linear_checkpoint), str(inputs), '--out-dir', str(tmp_path / 'o'),
                                 '--quiet'])
    message = str(stop.value.code)
    assert message.startswith('3 of 4 inputs skipped:')
    assert f'{inputs}/fake.JPG is not an image that can be read' in message
    assert f'{inputs}/thin.png (1000x3) could not be predicted or drawn: ' in message
    assert f'{inputs}/dot.png (1x1) could not be predicted or drawn: ' in message  # mmseg's drawing fails on it
    assert sorted(os.listdir(tmp_path / 'o')) == ['good_labels.png', 'good_overlay.png']  # nothing of the others
    assert 'done: 1 images' in capsys.readouterr().out


def test_infer_on_a_full_disk_names_the_file_and_leaves_no_truncated_output(linear_checkpoint, tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(tmp_path / 'x.png')
    out = tmp_path / 'o'
    env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1', PYTHONDONTWRITEBYTECODE='1')
    proc = run_command([sys.executable, os.path.join(ROOT, 'tools', 'infer.py'), LINEAR, str(linear_checkpoint),
                        str(tmp_path / 'x.png'), '--out-dir', str(out), '--quiet'], env, check=False, timeout=600,
                       preexec_fn=limit_file_size(64 << 10))
    assert proc.returncode != 0
    assert f'stopped: could not write {out}/x_overlay.png: File too large' in proc.stderr, proc.stderr[-2000:]
    assert 'free in' in proc.stderr
    assert 'x_overlay.png' not in os.listdir(out) and not [n for n in os.listdir(out) if n.startswith('.partial-')]


def test_convert_on_a_full_disk_names_the_destination_and_the_free_space(tmp_path):
    from internvit_dense.checkpoint import save_checkpoint
    save_checkpoint(tiny_vit(TINY_300M), str(tmp_path / 'a.pth'))
    size = (tmp_path / 'a.pth').stat().st_size
    for to in ('opengvlab-hf', 'pth'):
        dst = tmp_path / ('out.pth' if to == 'pth' else 'out_hf')
        proc = run_command([sys.executable, f'{ROOT}/tools/convert_checkpoint.py', str(tmp_path / 'a.pth'),
                            str(dst), '--to', to, '--arch=' + json.dumps(TINY_300M), '--pretrain-size', '56'],
                           dict(os.environ, PYTHONDONTWRITEBYTECODE='1'), check=False, timeout=300,
                           preexec_fn=limit_file_size(size // 2))
        assert proc.returncode != 0
        assert f'convert_checkpoint: could not write {dst}: ' in proc.stderr, proc.stderr[-2000:]
        assert 'free in' in proc.stderr and f'nothing was left at {dst}' in proc.stderr
        assert not dst.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith('.')]
