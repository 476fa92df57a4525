"""tools/setup_env.sh decides which mmcv a machine needs (CPU ops, or CUDA ops for named archs) and keys its
wheel cache by it, so a wheel built on a CPU login node is never installed where CUDA ops are needed.

The decision is tested through `--plan` with a stand-in interpreter (it answers the one torch query the plan
makes) and a stand-in nvcc: no GPU, no compiler and no install here.
"""
import os
import stat
import subprocess

import pytest

from conftest import ROOT

SCRIPT = os.path.join(ROOT, 'tools', 'setup_env.sh')


def _executable(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write(text)
    os.chmod(path, os.stat(path).st_mode | stat.S_IEXEC)


def plan(tmp_path, torch_answer, nvcc=False, arch_list=None, force_cuda=None):
    venv = tmp_path / 'venv'
    # the stand-in prints what `print(torch version, torch.version.cuda, cuda.is_available())` would
    _executable(str(venv / 'bin' / 'python'), f'#!/bin/sh\necho "{torch_answer}"\n')
    env = {k: v for k, v in os.environ.items() if k not in ('CUDA_PATH', 'TORCH_CUDA_ARCH_LIST', 'FORCE_CUDA')}
    env['PATH'] = '/usr/bin:/bin'
    env['VENV'] = str(venv)
    env['INTERNVIT_DENSE_CACHE'] = str(tmp_path / 'cache')
    # CUDA_HOME, when set, is the only toolkit looked at (as torch does): this machine's own is not seen
    env['CUDA_HOME'] = str(tmp_path / 'cuda')
    if nvcc:
        _executable(str(tmp_path / 'cuda' / 'bin' / 'nvcc'), '#!/bin/sh\nexit 0\n')
    if force_cuda is not None:
        env['FORCE_CUDA'] = force_cuda
    if arch_list:
        env['TORCH_CUDA_ARCH_LIST'] = arch_list
    out = subprocess.run(['bash', SCRIPT, '--plan'], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_cpu_machine_gets_a_cpu_key(tmp_path):
    out = plan(tmp_path, '2.14.1 none 0')
    assert '[setup] mmcv key: torch2.14.1-cpu' in out
    assert 'WARNING' not in out


def test_gpu_without_nvcc_says_so_in_one_line(tmp_path):
    out = plan(tmp_path, '2.14.1 12.8 1')
    assert '[setup] mmcv key: torch2.14.1-cpu' in out
    warning = [line for line in out.splitlines() if 'WARNING' in line]
    assert len(warning) == 1 and 'CPU ops only' in warning[0] and 'CUDA toolkit 12.8' in warning[0]


def test_toolkit_without_gpu_keeps_cpu_ops_unless_forced(tmp_path):
    # a CPU machine that has the toolkit (this CI runner has /usr/local/cuda) keeps the short CPU build ...
    out = plan(tmp_path, '2.14.1 12.8 0', nvcc=True)
    assert '[setup] mmcv key: torch2.14.1-cpu' in out and 'FORCE_CUDA=1' in out
    # ... and a login node builds for its GPU nodes on request, for the default archs
    out = plan(tmp_path, '2.14.1 12.8 0', nvcc=True, force_cuda='1')
    assert '[setup] mmcv key: torch2.14.1-cu12.8-sm_80_86_89_90' in out
    assert 'nvcc: ' + str(tmp_path / 'cuda' / 'bin' / 'nvcc') in out


def test_gpu_and_toolkit_build_cuda_ops_unless_told_not_to(tmp_path):
    assert '[setup] mmcv key: torch2.14.1-cu12.8-sm_80_86_89_90' in plan(tmp_path, '2.14.1 12.8 1', nvcc=True)
    assert '[setup] mmcv key: torch2.14.1-cpu' in plan(tmp_path, '2.14.1 12.8 1', nvcc=True, force_cuda='0')


def test_arch_list_overrides_and_keys_the_cache(tmp_path):
    out = plan(tmp_path, '2.11.0 13.0 1', nvcc=True, arch_list='9.0+PTX')
    assert '[setup] mmcv key: torch2.11.0-cu13.0-sm_90-PTX' in out
    assert str(tmp_path / 'cache' / 'mmcv' / 'torch2.11.0-cu13.0-sm_90-PTX') in out
