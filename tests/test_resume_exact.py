"""kill -9 and --resume give the run that was never interrupted, bit for bit, with drop path and dropout on.

The checkpoint carries every process's python/numpy/torch random states (SafeCheckpointHook); the
resumed run restores them once mmengine has replayed the data loader, so the masks drawn after the
resume are the masks the straight run drew. Data loading in the main process (num_workers=0), the
case where the data pipeline and the model share one random stream.
"""
import os
import sys

import pytest
import torch
from seg_utils import ROOT, TINY, data_options, load_ckpt, run_command, run_tool
from test_deepspeed import KILL_HOOK

from internvit_dense.engine.deepspeed import free_port

FULL = TINY.format('upernet_full')
DET = 'configs/detection/tiny/tiny_mask-rcnn_fpn_synthetic.py'
ITERS, SAVED_AT, KILLED_AT = 6, 3, 4  # the work of iteration 4 is lost with the kill, as in a real crash
COMMON = [f'train_cfg.max_iters={ITERS}', f'default_hooks.checkpoint.interval={SAVED_AT}',
          'train_cfg.val_interval=100000', 'default_hooks.checkpoint.save_best=None',
          'train_dataloader.batch_size=2', 'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False']
SEG = COMMON + ['model.backbone.drop_path_rate=0.2', 'model.decode_head.dropout_ratio=0.3',
                'model.auxiliary_head.dropout_ratio=0.3']


def kill_config(tmp_path, base):
    (tmp_path / 'kill_hook.py').write_text(KILL_HOOK)
    config = tmp_path / 'killed.py'
    config.write_text(f"_base_ = ['{os.path.join(ROOT, base)}']\n"
                      "custom_imports = dict(imports=['internvit_dense.models', 'internvit_dense.engine', "
                      "'internvit_dense.datasets', 'kill_hook'], allow_failed_imports=False)\n"
                      f"custom_hooks = [dict(type='KillAfterCheckpoint', at_iter={KILLED_AT})]\n")
    return config


def train(config, work, options, *args, nproc=1, check=True, pythonpath=None, background=False):
    """Runs tools/train.py (or dist_train.sh for nproc > 1), in the background too (seg_utils.run_command)."""
    env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')
    if pythonpath:
        env['PYTHONPATH'] = f"{pythonpath}{os.pathsep}{env.get('PYTHONPATH', '')}"
    if nproc == 1:
        cmd = [sys.executable, os.path.join(ROOT, 'tools', 'train.py'), str(config)]
    else:
        env.update(PORT=str(free_port()), PYTHON=sys.executable)
        cmd = ['bash', os.path.join(ROOT, 'tools', 'dist_train.sh'), str(config), str(nproc)]
    cmd += ['--work-dir', str(work), *map(str, args), '--cfg-options', *options]
    return run_command(cmd, env, check=check, background=background)


def differing(a, b):
    """Names of the tensors of two checkpoints' weights and optimizer states that are not bit-identical."""
    bad = [k for k, v in a['state_dict'].items() if not torch.equal(v, b['state_dict'][k])]
    for pid, state in a['optimizer']['state'].items():
        bad += [f'optimizer.{pid}.{k}' for k, v in state.items()
                if torch.is_tensor(v) and not torch.equal(v, b['optimizer']['state'][pid][k])]
    return bad


def kill_and_resume(tmp_path, base, options, *args, nproc=1, load=load_ckpt, straight=None):
    """``straight``: the work dir of a run of ``base`` with these options that another test already made."""
    straight_done = None
    if straight is None:
        straight = tmp_path / 'straight'
        # the uninterrupted run beside the killed one: one thread each, the two cores of the test machine; not for
        # DeepSpeed: each single-process run takes a free rendezvous port, and two at once can be handed the same one
        if '--deepspeed' in args:
            train(base, straight, options, *args, nproc=nproc)
        else:
            straight_done = train(base, straight, options, *args, nproc=nproc, background=True)
    work = tmp_path / 'killed'
    killed = train(kill_config(tmp_path, base), work, options, *args, nproc=nproc, check=False, pythonpath=tmp_path)
    if straight_done:
        straight_done()
    assert killed.returncode != 0 and not (work / f'iter_{ITERS}.pth').exists()
    resumed = train(base, work, options, *args, '--resume', nproc=nproc)
    out = resumed.stdout + resumed.stderr
    assert f'resumed epoch: 0, iter: {SAVED_AT}' in out
    assert 'taking over the lock of a run that no longer runs' in out  # the killed run's lock
    return load(straight / f'iter_{ITERS}.pth'), load(work / f'iter_{ITERS}.pth'), work


@pytest.fixture(scope='module')
def ade(ade20k_small):
    return ade20k_small  # the test run's shared 8-image set (tests/conftest.py)


def test_segmentation_killed_and_resumed_is_bit_identical(ade, tmp_path):
    options = data_options(ade, SEG)[1:]
    straight, resumed, work = kill_and_resume(tmp_path, FULL, options)
    assert differing(straight, resumed) == []  # weights and AdamW's state, its step counts included
    assert {int(s['step']) for s in resumed['optimizer']['state'].values()} == {ITERS}  # not restarted at 0
    assert resumed['param_schedulers'] == straight['param_schedulers']
    lrs = [g['lr'] for g in resumed['optimizer']['param_groups']]
    assert lrs == [g['lr'] for g in straight['optimizer']['param_groups']]
    assert len(set(round(lr, 12) for lr in lrs)) > 3  # layer-wise decay: the groups' rates differ

    # the control: the same resume without the saved random states draws other masks
    control = tmp_path / 'control'
    control.mkdir()
    saved = load_ckpt(work / f'iter_{SAVED_AT}.pth')
    del saved['message_hub']['runtime_info']['random_states']
    torch.save(saved, control / f'iter_{SAVED_AT}.pth')
    (control / 'last_checkpoint').write_text(str(control / f'iter_{SAVED_AT}.pth'))
    train(FULL, control, options, '--resume')
    assert len(differing(straight, load_ckpt(control / f'iter_{ITERS}.pth'))) > 10


def test_two_processes_killed_and_resumed_is_bit_identical(ade, tmp_path):
    straight, resumed, _ = kill_and_resume(tmp_path, FULL, data_options(ade, SEG)[1:], nproc=2)
    assert len(resumed['message_hub']['runtime_info']['random_states']) == 2
    assert differing(straight, resumed) == []


def test_detection_killed_and_resumed_is_bit_identical(coco_small, tmp_path):
    root = coco_small
    ann = os.path.join(root, 'annotations', 'instances_val2017.json')
    options = data_options(root, COMMON + ['model.backbone.drop_path_rate=0.2', f'val_evaluator.ann_file={ann}',
                                           f'test_evaluator.ann_file={ann}'])[1:]
    straight, resumed, _ = kill_and_resume(tmp_path, DET, options)
    assert differing(straight, resumed) == []


def test_deepspeed_zero1_killed_and_resumed_is_bit_identical(ade, tmp_path):
    """ZeRO-1, fp32, one process: the random states travel in the message hub of DeepSpeed's client state."""
    from conftest import load_tool
    consolidate = load_tool('zero_to_fp32').consolidate

    def weights(folder):
        return dict(state_dict=consolidate(str(folder))['state_dict'], optimizer=dict(state={}))

    straight, resumed, _ = kill_and_resume(tmp_path, 'configs/segmentation/tiny/tiny_upernet_full_synthetic_deepspeed.py',
                                           data_options(ade, SEG)[1:], '--deepspeed', '1', '--deepspeed-precision',
                                           'fp32', load=weights)
    assert differing(straight, resumed) == []
