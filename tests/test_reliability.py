"""Nothing lost, nothing silent: the fault cases of a long run, each through the tools as a user meets it.

Every test that trains checks that nothing outside its work dir changed (``snapshot`` of the other
folders before and after).
"""
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from seg_utils import ROOT, TINY, data_options, load_ckpt, run_command, run_tool

from internvit_dense.engine.work_dir import LOCK_NAME, _process_start

LINEAR = TINY.format('linear_frozen')
FULL = TINY.format('upernet_full')
QUICK = ['train_dataloader.batch_size=2', 'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
         'val_dataloader.num_workers=0', 'val_dataloader.persistent_workers=False', 'default_hooks.logger.interval=1',
         'log_processor.window_size=1']


def opts(iters, every, *extra, best=False):
    o = [f'train_cfg.max_iters={iters}', f'default_hooks.checkpoint.interval={every}', *QUICK]
    o += [f'train_cfg.val_interval={every}'] if best else ['train_cfg.val_interval=100000',
                                                           'default_hooks.checkpoint.save_best=None']
    return o + list(extra)


def outside(data_root):
    """What a run must leave alone: the data set and the checkout it runs in (its default work_dirs/)."""
    return snapshot(data_root), sorted(os.listdir(ROOT))


def snapshot(folder):
    """{relative path: (size, mtime)} of every file under ``folder``."""
    out = {}
    for d, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(d, f)
            st = os.stat(p)
            out[os.path.relpath(p, folder)] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture(scope='module')
def data(ade20k_small):
    return ade20k_small  # the test run's shared 8-image set (tests/conftest.py); data_copy to damage it


@pytest.fixture
def data_copy(data, tmp_path):
    root = tmp_path / 'data'
    shutil.copytree(data, root)
    return root


def train(config, work, data_root, options, *args, check=True, **kw):
    return run_tool('train.py', config, '--work-dir', work, *args, *data_options(data_root, options), check=check,
                    threads=1, **kw)


# ------------------------------------------------------------------- 14.1 copied / moved work dir
def test_copied_and_moved_work_dirs_resume_from_their_own_checkpoints(data, tmp_path):
    original = tmp_path / 'runA'
    train(LINEAR, original, data, opts(4, 2, best=True))
    recorded = load_ckpt(original / 'iter_4.pth')['message_hub']['runtime_info']
    assert str(original) in recorded['best_ckpt']  # mmengine's record: an absolute path into runA
    before = snapshot(original)

    copy = tmp_path / 'runT'
    shutil.copytree(original, copy)
    proc = train(LINEAR, copy, data, opts(8, 2, best=True), '--resume')
    out = proc.stdout + proc.stderr
    assert f'resuming from {copy}/iter_4.pth instead' in out and 'outside the work dir' in out
    assert 'resumed epoch: 0, iter: 4' in out
    assert 'best-checkpoint record names' in out
    assert (copy / 'iter_8.pth').is_file()
    assert snapshot(original) == before  # read nothing from, rotated and deleted nothing in runA

    moved = tmp_path / 'runM'
    original.rename(moved)  # every path recorded inside now dangles
    proc = train(LINEAR, moved, data, opts(6, 2, best=True), '--resume')
    assert 'resumed epoch: 0, iter: 4' in proc.stdout + proc.stderr
    assert (moved / 'iter_6.pth').is_file()
    assert not original.exists()


# ------------------------------------------------------------------- 14.2 two runs, one work dir
def test_a_second_run_in_a_busy_work_dir_is_refused_and_a_stale_lock_taken_over(data, tmp_path):
    work = tmp_path / 'w'
    work.mkdir()
    before = outside(data)
    host = socket.gethostname()
    # a live holder on this host: this test process stands in for the first training run
    (work / LOCK_NAME).write_text(f'{{"host": "{host}", "pid": {os.getpid()}, "started": "{_process_start(os.getpid())}", '
                                  f'"since": "today", "command": "tools/train.py first"}}')
    proc = train(LINEAR, work, data, opts(2, 2), check=False)
    assert proc.returncode != 0
    assert f'is in use by another training run: pid {os.getpid()} on {host}' in proc.stderr
    assert sorted(os.listdir(work)) == [LOCK_NAME]  # nothing written or rotated

    # the holder was killed (-9): its pid no longer runs
    dead = subprocess.Popen(['true'])
    dead.wait()
    (work / LOCK_NAME).write_text(f'{{"host": "{host}", "pid": {dead.pid}, "started": "1", "since": "yesterday", '
                                  '"command": "tools/train.py killed"}')
    proc = train(LINEAR, work, data, opts(2, 2))
    assert f'taking over the lock of a run that no longer runs (pid {dead.pid}' in proc.stderr
    assert (work / 'iter_2.pth').is_file() and not (work / LOCK_NAME).exists()  # released at the end
    assert outside(data) == before


# ------------------------------------------------------------------- 14.3 NaN / Inf loss
def test_nan_loss_stops_the_run_and_nothing_non_finite_is_saved(data, tmp_path):
    work = tmp_path / 'w'
    before = outside(data)
    proc = train(FULL, work, data, opts(8, 1, 'optim_wrapper.optimizer.lr=1e8', 'default_hooks.checkpoint.max_keep_ckpts=100'),
                 check=False)
    assert proc.returncode != 0
    err = proc.stderr
    assert 'training stopped: the loss is not finite at iteration' in err, err[-3000:]
    assert 'decode.loss_ce=nan' in err or 'decode.loss_ce=inf' in err
    assert 'the last checkpoint saved is' in err and 'Lower the learning rate' in err
    stopped_at = int(err.split('not finite at iteration ')[1].split()[0])
    saved = sorted(work.glob('iter_*.pth'))
    assert len(saved) == stopped_at - 1  # every iteration before it, none from it on
    for path in saved:
        weights = load_ckpt(path)['state_dict']
        assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point()), path
    assert outside(data) == before


def test_non_finite_weights_are_never_saved():
    from types import SimpleNamespace

    from mmengine.logging import MessageHub

    from internvit_dense.engine.hooks import NonFiniteError, SafeCheckpointHook
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    hook = SafeCheckpointHook(interval=1, by_epoch=False)
    runner = SimpleNamespace(model=model, iter=6, message_hub=MessageHub.get_instance('nonfinite'))
    hook._refuse_non_finite(runner)  # finite: passes
    with torch.no_grad():
        model[1].running_var[0] = float('inf')
    hook._checked_iter = None
    with pytest.raises(NonFiniteError, match=r'not finite after iteration 7 \(1 tensors: 1.running_var\)'):
        hook._refuse_non_finite(runner)


# ------------------------------------------------------------------- 14.4 atomic writes, damaged checkpoints
def limit_file_size(limit):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails (EFBIG) instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_full_disk_leaves_no_partial_checkpoint(data, tmp_path):
    """A file-size limit below a checkpoint's size stands in for a full disk: the write fails half way."""
    work = tmp_path / 'w'
    before = outside(data)
    env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')
    cmd = [sys.executable, os.path.join(ROOT, 'tools', 'train.py'), LINEAR, '--work-dir', str(work),
           *data_options(data, opts(2, 2))]
    proc = run_command(cmd, env, check=False, timeout=600, preexec_fn=limit_file_size(256 << 10))
    assert proc.returncode != 0
    assert f'could not write {work}/iter_2.pth: File too large' in proc.stderr, proc.stderr[-3000:]
    assert 'free in' in proc.stderr and 'earlier checkpoints are untouched' in proc.stderr
    left = os.listdir(work)
    assert 'iter_2.pth' not in left and not [n for n in left if n.startswith('.partial-')]
    assert outside(data) == before


def test_resume_skips_a_truncated_latest_checkpoint(data, tmp_path):
    work = tmp_path / 'w'
    train(LINEAR, work, data, opts(4, 2))
    latest = work / 'iter_4.pth'
    before = outside(data)
    latest.write_bytes(latest.read_bytes()[:latest.stat().st_size // 2])  # cut off while being written

    proc = train(LINEAR, work, data, opts(6, 2), '--resume')
    out = proc.stdout + proc.stderr
    assert f'checkpoint {latest} is truncated' in out
    assert f'resuming from the previous whole checkpoint {work}/iter_2.pth instead' in out
    assert 'resumed epoch: 0, iter: 2' in out
    assert load_ckpt(work / 'iter_6.pth')['meta']['iter'] == 6
    assert outside(data) == before


def test_damaged_checkpoints_are_named_before_resuming(tmp_path):
    from argparse import Namespace

    from mmengine.config import Config

    from internvit_dense.engine.cli import resolve_resume
    work = tmp_path / 'w'
    work.mkdir()
    for i in (2, 4, 6):
        torch.save({'meta': {'iter': i}}, work / f'iter_{i}.pth')
    (work / 'iter_6.pth').write_bytes(b'')
    (work / 'iter_4.pth').write_bytes((work / 'iter_4.pth').read_bytes()[:-30])
    (work / 'last_checkpoint').write_text('/somewhere/else/iter_6.pth')
    cfg = Config(dict(work_dir=str(work)))
    with pytest.warns(UserWarning) as caught:
        resolve_resume(cfg, 'auto')
    notes = ' '.join(str(w.message) for w in caught)
    assert 'names /somewhere/else/iter_6.pth, outside the work dir' in notes
    assert f'checkpoint {work}/iter_6.pth is empty (0 bytes); checkpoint {work}/iter_4.pth is truncated' in notes
    assert cfg.load_from == str(work / 'iter_2.pth') and cfg.resume

    with pytest.raises(SystemExit, match=rf'--resume: checkpoint {work}/iter_6.pth is empty \(0 bytes\); the newest '
                                         rf'whole one next to it is {work}/iter_2.pth'):
        resolve_resume(Config(dict(work_dir=str(work))), str(work / 'iter_6.pth'))
    (work / 'iter_2.pth').write_bytes(b'not a checkpoint')
    with pytest.raises(SystemExit, match='no whole checkpoint to resume from'):
        resolve_resume(Config(dict(work_dir=str(work))), 'auto')


# ------------------------------------------------------------------- 14.6 labels out of range
def test_out_of_range_label_named_in_training_and_testing(data_copy, tmp_path):
    from internvit_dense.apis import init_model
    checkpoint = tmp_path / 'random.pth'
    torch.save({'state_dict': init_model(LINEAR).state_dict()}, checkpoint)
    for split in ('training', 'validation'):
        victim = sorted((data_copy / 'annotations' / split).glob('*.png'))[0]
        label = np.array(Image.open(victim))
        label[3, 5] = 201  # 200 after reduce_zero_label, in a 150-class set
        Image.fromarray(label).save(victim)
    expected = ('holds value 200 after reduce_zero_label (file value minus 1) but the data set has num_classes=150 '
                '(labels 0-149) and ignore index 255')
    victim = sorted((data_copy / 'annotations' / 'training').glob('*.png'))[0]
    proc = train(LINEAR, tmp_path / 'w2', data_copy, opts(2, 2), check=False)
    assert proc.returncode != 0 and f'label map {victim} {expected}' in proc.stderr, proc.stderr[-2000:]

    victim = sorted((data_copy / 'annotations' / 'validation').glob('*.png'))[0]
    proc = run_tool('test.py', LINEAR, checkpoint, '--work-dir', tmp_path / 't',
                    *data_options(data_copy, QUICK[3:5]), check=False, threads=1)
    assert proc.returncode != 0 and f'label map {victim} {expected}' in proc.stderr, proc.stderr[-2000:]


# ------------------------------------------------------------------- 14.9 unclear errors
def test_zero_byte_image_named(data_copy, tmp_path):
    victim = sorted((data_copy / 'images' / 'training').glob('*.jpg'))[2]
    victim.write_bytes(b'')
    proc = train(LINEAR, tmp_path / 'w', data_copy, opts(2, 2), check=False)
    assert proc.returncode != 0
    assert f'1 empty (0-byte) files in {data_copy}: {victim}' in proc.stderr


def test_near_miss_config_keys_warn(tmp_path):
    from argparse import Namespace

    from internvit_dense.engine.cli import load_config
    config = tmp_path / 'typo.py'
    config.write_text(f"_base_ = ['{ROOT}/{LINEAR}']\nload_fromm = 'x.pth'\ncrop_size_small = 3\n")
    with pytest.warns(UserWarning, match="top-level key 'load_fromm' is not one mmengine reads; did you mean "
                                         "'load_from'"):
        load_config(Namespace(config=str(config), launcher='none', cfg_options=None, work_dir=str(tmp_path / 'w'),
                              local_rank=0))
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # a config's own variables (crop_size, tiny_arch, ...) are fine
        load_config(Namespace(config=f'{ROOT}/{LINEAR}', launcher='none', cfg_options=None, work_dir=None,
                              local_rank=0))


# ------------------------------------------------------------------- 14.8 huge images, 14.9 zero-byte in infer
def test_chunked_argmax_gives_the_labels_of_the_full_resize(one_thread):
    from internvit_dense.inference import resize_argmax
    torch.manual_seed(0)
    logits = torch.randn(150, 21, 29)
    logits[7, 3:6, 4:9] = logits[9, 3:6, 4:9]  # exact ties: both take the lower class, as argmax does
    for align_corners in (False, True):
        full = torch.nn.functional.interpolate(logits[None], size=(301, 417), mode='bilinear',
                                               align_corners=align_corners)[0].argmax(0)
        chunked = resize_argmax(logits, (301, 417), align_corners, chunk_elements=301 * 417 * 7)  # 22 chunks
        assert torch.equal(full, chunked)


def test_infer_labels_match_mmseg_and_an_empty_image_is_named(tmp_path, one_thread):
    from conftest import load_tool
    from mmseg.apis import inference_model

    from internvit_dense.apis import init_model
    from internvit_dense.inference import segment
    model = init_model(FULL)
    rng = np.random.default_rng(0)
    bgr = np.ascontiguousarray(np.kron(rng.integers(0, 255, (9, 13, 3)), np.ones((31, 29, 1))).astype(np.uint8))
    ours = segment(model, bgr).pred_sem_seg.data
    theirs = inference_model(model, bgr).pred_sem_seg.data
    assert ours.shape == theirs.shape == (1, 279, 377) and torch.equal(ours, theirs)

    torch.save({'state_dict': model.state_dict()}, tmp_path / 'm.pth')
    (tmp_path / 'empty.jpg').write_bytes(b'')
    with pytest.raises(SystemExit, match=f'{tmp_path}/empty.jpg is empty \\(0 bytes\\): not an image'):
        load_tool('infer').main([FULL, str(tmp_path / 'm.pth'), str(tmp_path / 'empty.jpg'), '--out-dir',
                                 str(tmp_path / 'out'), '--quiet'])


def test_overflow_skips_of_a_loss_scaler_are_not_failures():
    """A non-finite gradient norm with a finite loss is a loss-scale overflow skip under AMP / DeepSpeed fp16
    (the step is dropped), a failure without a loss scaler; a non-finite loss stops either way."""
    from types import SimpleNamespace

    from mmengine.logging import MessageHub

    from internvit_dense.engine.hooks import NonFiniteError, StopOnNonFiniteLoss

    class AmpOptimWrapper:
        pass

    class OptimWrapper:
        pass

    hub = MessageHub.get_instance('overflow')
    hub.update_scalar('train/grad_norm', float('inf'))
    finite = {'loss': torch.tensor(1.5), 'decode.loss_ce': torch.tensor(1.5), 'decode.acc_seg': torch.tensor(3.0)}
    hook = StopOnNonFiniteLoss()
    amp = SimpleNamespace(optim_wrapper=AmpOptimWrapper(), message_hub=hub, iter=11, model=None)
    hook.after_train_iter(amp, 0, outputs=finite)  # skipped step: goes on
    plain = SimpleNamespace(optim_wrapper=OptimWrapper(), message_hub=hub, iter=11, model=None)
    with pytest.raises(NonFiniteError, match=r'gradient norm is inf at iteration 12 \(loss terms: loss=1.5, '
                                             r'decode.loss_ce=1.5\)'):
        hook.after_train_iter(plain, 0, outputs=finite)
    engine = SimpleNamespace(skipped_steps=3, optimizer=SimpleNamespace(cur_scale=1024.0))
    deepspeed = SimpleNamespace(optim_wrapper=AmpOptimWrapper(), message_hub=hub, iter=11, model=engine)
    with pytest.raises(NonFiniteError, match=r'loss is not finite at iteration 12 \(loss=nan, decode.loss_ce=nan\).*'
                                             r'DeepSpeed skipped 3 steps on fp16 gradient overflow, loss scale now 1024'):
        hook.after_train_iter(deepspeed, 0, outputs={'loss': torch.tensor(float('nan')),
                                                     'decode.loss_ce': torch.tensor(float('nan'))})
