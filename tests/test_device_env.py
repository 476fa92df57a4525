"""Issue 19: the GPU software stack checked at tool start (internvit_dense/engine/device_env.py), on the CPU
with stand-ins for what a GPU machine would report: a DeepSpeed that cannot be imported, nvidia-smi
listing GPUs torch cannot use, mmcv's compiled ops without CUDA."""
import json
import os
import subprocess
import sys
import types

import pytest
import torch
from seg_utils import ROOT, TINY, TOOL_THREADS

from internvit_dense.engine import device_env

# A DeepSpeed whose import fails as on a GPU host without the CUDA toolkit (deepspeed/git_version_info.py
# asks every op builder, whose installed_cuda_version() raises): a meta-path stand-in in front of the real one.
BROKEN_DEEPSPEED = r'''
import importlib.abc, importlib.util, json, runpy, sys

class MissingCUDAException(Exception):
    pass

class BrokenDeepSpeed(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        return importlib.util.spec_from_loader(name, self) if name.split('.')[0] == 'deepspeed' else None
    def create_module(self, spec):
        return None
    def exec_module(self, module):
        raise MissingCUDAException('CUDA_HOME does not exist, unable to compile CUDA op(s)')

sys.meta_path.insert(0, BrokenDeepSpeed())
sys.path.insert(0, sys.argv[1])
for command in json.loads(sys.argv[2]):  # each in turn, in this one process, as `python tools/x.py ...` runs it
    sys.argv = command
    try:
        runpy.run_path(sys.argv[0], run_name='__main__')
        print('EXIT 0', flush=True)
    except SystemExit as e:
        print(f'EXIT {e.code}', flush=True)
'''


def run_with_broken_deepspeed(*commands):
    """Each command (tool path and arguments) in turn, in one process whose DeepSpeed is broken; returns
    the process and each command's exit code or message."""
    env = dict(os.environ, OMP_NUM_THREADS=str(TOOL_THREADS), PYTHONUNBUFFERED='1')
    commands = json.dumps([[str(a) for a in command] for command in commands])
    proc = subprocess.run([sys.executable, '-c', BROKEN_DEEPSPEED, ROOT, commands], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    return proc, [line[len('EXIT '):] for line in proc.stdout.splitlines() if line.startswith('EXIT ')]


def test_a_deepspeed_that_fails_to_import_stops_only_deepspeed_runs(tmp_path):
    from internvit_dense.datasets.synthetic_ade20k import generate_synthetic_ade20k
    data = tmp_path / 'data'
    generate_synthetic_ade20k(str(data), num_train=2, num_val=1, seed=0, progress=False, overwrite=True)
    config = TINY.format('linear_frozen')
    options = ['--cfg-options', f'train_dataloader.dataset.data_root={data}', 'train_dataloader.batch_size=1',
               'train_cfg.max_iters=1', 'default_hooks.checkpoint.interval=1', 'val_dataloader=None',
               'val_cfg=None', 'val_evaluator=None']

    train = os.path.join(ROOT, 'tools', 'train.py')
    # mmengine imports its DeepSpeed strategy with the runner: without the guard the first run fails at import
    proc, exits = run_with_broken_deepspeed(
        [train, config, '--work-dir', tmp_path / 'plain', *options],
        [train, config, '--work-dir', tmp_path / 'ds', '--deepspeed', '1', *options])
    assert proc.returncode == 0 and len(exits) == 2, proc.stderr[-4000:]
    assert exits[0] == '0' and (tmp_path / 'plain' / 'iter_1.pth').is_file(), proc.stderr[-4000:]
    print(f'  the DeepSpeed run stops with: {exits[1]}')
    assert 'DeepSpeed cannot be imported' in exits[1] and 'MissingCUDAException: CUDA_HOME does not exist' in exits[1]
    assert not (tmp_path / 'ds' / 'iter_1.pth').exists()


# ------------------------------------------------------------------ nvidia-smi vs torch
def fake_nvidia_smi(monkeypatch, gpus=('NVIDIA H100 80GB HBM3',), driver='535.104.05', driver_cuda='12.2'):
    """nvidia-smi as a machine with `gpus` and that driver answers; torch sees no GPU."""
    def run(cmd, **kwargs):
        assert cmd[0] == '/usr/bin/nvidia-smi'
        if '--query-gpu=name,driver_version' in cmd:
            out = ''.join(f'{name}, {driver}\n' for name in gpus)
        else:
            out = (f'| NVIDIA-SMI {driver}   Driver Version: {driver}   CUDA Version: {driver_cuda}     |\n'
                   '| 0  NVIDIA H100 80GB HBM3  ...\n')
        return subprocess.CompletedProcess(cmd, 0, stdout=out, stderr='')

    monkeypatch.setattr(device_env.shutil, 'which', lambda name: {'nvidia-smi': '/usr/bin/nvidia-smi'}.get(name))
    monkeypatch.setattr(device_env.subprocess, 'run', run)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    monkeypatch.delenv('CUDA_VISIBLE_DEVICES', raising=False)


def test_gpus_torch_cannot_use_are_refused_naming_both_versions(monkeypatch):
    fake_nvidia_smi(monkeypatch, gpus=['NVIDIA H100 80GB HBM3'] * 8)
    monkeypatch.setattr(torch.version, 'cuda', '13.0')
    with pytest.raises(SystemExit) as e:
        device_env.check_device_environment()
    message = str(e.value)
    print(f'  {message}')
    assert 'nvidia-smi sees 8 GPUs (NVIDIA H100 80GB HBM3)' in message
    assert 'driver 535.104.05, which supports CUDA up to 12.2' in message
    assert f'torch {torch.__version__} is built for CUDA 13.0' in message
    assert '\n' not in message

    monkeypatch.setattr(torch.version, 'cuda', None)  # a CPU-only torch on a GPU machine
    with pytest.raises(SystemExit, match='is a build without CUDA; install a torch built for CUDA 12.2'):
        device_env.check_device_environment()


def test_gpus_hidden_on_purpose_or_absent_or_usable_are_not_refused(monkeypatch):
    fake_nvidia_smi(monkeypatch)
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '')
    assert device_env.torch_gpu_mismatch() is None  # the user asked for the CPU
    monkeypatch.delenv('CUDA_VISIBLE_DEVICES')
    assert device_env.torch_gpu_mismatch() is not None
    monkeypatch.setattr(device_env.shutil, 'which', lambda name: None)  # no driver: a CPU machine
    assert device_env.torch_gpu_mismatch() is None
    fake_nvidia_smi(monkeypatch)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(device_env, 'mmcv_ops_note', lambda: None)
    device_env.check_device_environment()  # torch uses them: nothing to say


# ------------------------------------------------------------------ mmcv's compiled ops
def test_mmcv_cuda_ops_are_detected_without_a_gpu():
    """The project's mmcv on this machine: built on a CPU, so its _ext reports no CUDA."""
    import mmcv.ops
    assert mmcv.ops.get_compiling_cuda_version() == device_env.mmcv_compiled_cuda()
    if not torch.cuda.is_available():
        assert device_env.mmcv_compiled_cuda() == 'not available'


@pytest.mark.parametrize('compiled, gpu, says', [('not available', True, 'built without CUDA ops'),
                                                  (None, True, 'no compiled ops'),
                                                  ('12.8', True, None),
                                                  ('not available', False, None)])
def test_mmcv_without_cuda_ops_on_a_gpu_machine_is_one_line_with_the_fix(monkeypatch, capsys, compiled, gpu, says):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: gpu)
    monkeypatch.setattr(device_env, 'mmcv_compiled_cuda', lambda: compiled)
    monkeypatch.setattr(device_env, 'torch_gpu_mismatch', lambda: None)
    device_env.check_device_environment()
    err = capsys.readouterr().err
    if says is None:
        assert err == ''
    else:
        assert err.count('\n') == 1 and says in err
        assert 're-run tools/setup_env.sh on a machine with nvcc' in err and 'FORCE_CUDA=1' in err


def test_mmcv_compiled_cuda_reads_mmcv(monkeypatch):
    import mmcv.ops
    monkeypatch.setattr(mmcv.ops, 'get_compiling_cuda_version', lambda: '12.8')
    assert device_env.mmcv_compiled_cuda() == '12.8'


# ------------------------------------------------------------------ Slurm
SLURM_8 = dict(SLURM_NTASKS='8', SLURM_PROCID='3', SLURM_LOCALID='3')


@pytest.fixture
def slurm_step(monkeypatch):
    """The environment of one process of an 8-task Slurm step, before mmengine's launcher sets WORLD_SIZE."""
    for key in ('WORLD_SIZE', 'RANK', 'LOCAL_RANK'):
        monkeypatch.delenv(key, raising=False)
    for key, value in SLURM_8.items():
        monkeypatch.setenv(key, value)


def fake_zero_checkpoint(path, processes):
    path.mkdir()
    (path / 'mp_rank_00_model_states.pt').touch()
    for rank in range(processes):
        (path / f'bf16_zero_pp_rank_{rank}_mp_rank_00_optim_states.pt').touch()
    return path


def test_slurm_world_size_is_read_from_slurm(slurm_step):
    from internvit_dense.engine.cli import launcher_local_rank, launcher_world_size, process_rank
    assert launcher_world_size('slurm') == 8 and process_rank() == 3 and launcher_local_rank('slurm') == 3
    assert launcher_world_size('pytorch') == 1  # torchrun sets WORLD_SIZE itself: not set here


def test_slurm_deepspeed_resume_checks_the_slurm_world_size(slurm_step, tmp_path):
    from mmengine.config import Config

    from internvit_dense.engine.cli import resolve_resume
    cfg = Config(dict(launcher='slurm', work_dir=str(tmp_path)))
    whole = fake_zero_checkpoint(tmp_path / 'iter_8.pth', processes=8)
    resolve_resume(cfg, str(whole), deepspeed=True)  # written by 8 processes, resumed by 8
    assert cfg.load_from == str(whole)
    other = fake_zero_checkpoint(tmp_path / 'iter_4.pth', processes=4)
    with pytest.raises(SystemExit, match='written by 4 processes and this run has 8'):
        resolve_resume(cfg, str(other), deepspeed=True)


def test_slurm_memory_plan_plans_for_the_slurm_world_size(slurm_step, monkeypatch):
    from mmengine.config import Config

    from internvit_dense.memory_plan import plan as memory_plan
    planned = {}

    def plan_config(cfg, gpus, gpu_memory_gb, name):
        planned.update(gpus=gpus)
        return types.SimpleNamespace(fits=True)

    monkeypatch.setattr(memory_plan, 'plan_config', plan_config)
    memory_plan.stop_if_it_cannot_fit(Config(dict(launcher='slurm', model=dict())), 'x.py', gpu_memory_gb=80)
    assert planned == dict(gpus=8)


def test_slurm_launcher_outside_slurm_is_a_clear_error(monkeypatch):
    from internvit_dense.engine.cli import launcher_world_size
    monkeypatch.delenv('SLURM_NTASKS', raising=False)
    with pytest.raises(SystemExit, match='SLURM_NTASKS is not set'):
        launcher_world_size('slurm')
