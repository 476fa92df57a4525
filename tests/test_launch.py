"""What the entry points set up before a run: here, the CPU allocator setting."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Frees a 16 MiB activation-sized tensor and reports by how much the process shrank (KiB).
PROBE = r'''
import os, sys, torch
from internvit_dense.engine.workarounds import keep_freed_memory_on_cpu
took = keep_freed_memory_on_cpu() if sys.argv[1] == 'keep' else False
page_kib = os.sysconf('SC_PAGE_SIZE') // 1024
rss = lambda: int(open('/proc/self/statm').read().split()[1]) * page_kib
x = torch.ones(4 << 20)  # 16 MiB, every page touched
before = rss()
del x
print(took, before - rss())
'''


pytestmark = pytest.mark.skipif(not sys.platform.startswith('linux'), reason='reads /proc; sets glibc options')


def run_probe(mode, **malloc_env):
    env = {k: v for k, v in os.environ.items() if not k.startswith('MALLOC_')}
    env.update(malloc_env, PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, '-c', PROBE, mode], env=env, capture_output=True, text=True, check=True)
    took, shrunk_kib = out.stdout.split()
    return took == 'True', int(shrunk_kib)


def test_freed_activations_stay_in_the_process():
    took, shrunk = run_probe('os')
    assert not took and shrunk > 15 * 1024  # glibc's default: the block goes back to the OS at once
    took, shrunk = run_probe('keep')
    assert took and shrunk < 1024  # kept for the next step


def test_the_users_malloc_environment_wins():
    took, shrunk = run_probe('keep', MALLOC_MMAP_THRESHOLD_='131072')
    assert not took and shrunk > 15 * 1024
