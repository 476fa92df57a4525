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
    took, shrunk_kib = out.stdout.splitlines()[-1].split()  # the last line: imports may log before it
    return took == 'True', int(shrunk_kib)


def test_freed_activations_stay_in_the_process():
    took, shrunk = run_probe('os')
    assert not took and shrunk > 15 * 1024  # glibc's default: the block goes back to the OS at once
    took, shrunk = run_probe('keep')
    assert took and shrunk < 1024  # kept for the next step


def test_the_users_malloc_environment_wins():
    took, shrunk = run_probe('keep', MALLOC_MMAP_THRESHOLD_='131072')
    assert not took and shrunk > 15 * 1024


# ------------------------------------------------------------------ several machines (issue 19)
def train_on_two_nodes(config, work, *args):
    """tools/dist_train.sh as two machines would run it (NNODES=2, NODE_RANK 0 and 1, MASTER_ADDR, PORT),
    both on this one: one process each, gloo. With the project's .venv where there is one (the script's
    default), else this interpreter."""
    from internvit_dense.engine.deepspeed import free_port
    port = str(free_port())
    procs = []
    for node in (0, 1):
        env = dict(os.environ, NNODES='2', NODE_RANK=str(node), MASTER_ADDR='127.0.0.1', PORT=port,
                   OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1')
        env.pop('PYTHON', None)
        if not os.access(os.path.join(ROOT, '.venv', 'bin', 'python'), os.X_OK):
            env['PYTHON'] = sys.executable
        procs.append(subprocess.Popen(['bash', os.path.join(ROOT, 'tools', 'dist_train.sh'), config, '1',
                                       '--work-dir', str(work), *map(str, args)],
                                      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = []
    for proc in procs:
        try:
            outputs.append(proc.communicate(timeout=300)[0])
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise
    for node, (proc, out) in enumerate(zip(procs, outputs)):
        assert proc.returncode == 0, f'node {node} failed ({proc.returncode}):\n{out[-5000:]}'
    return outputs


def test_two_nodes_train_and_resume(tmp_path):
    import json

    from internvit_dense.datasets.synthetic_ade20k import generate_synthetic_ade20k
    data = tmp_path / 'data'
    generate_synthetic_ade20k(str(data), num_train=2, num_val=1, seed=0, progress=False, overwrite=True)
    config = 'configs/segmentation/tiny/tiny_linear_frozen_synthetic.py'
    work = tmp_path / 'work'
    options = [f'train_dataloader.dataset.data_root={data}', 'train_dataloader.batch_size=1',
               'default_hooks.checkpoint.interval=2', 'default_hooks.logger.interval=1', 'val_dataloader=None',
               'val_cfg=None', 'val_evaluator=None']
    first = train_on_two_nodes(config, work, '--cfg-options', 'train_cfg.max_iters=2', *options)
    assert (work / 'iter_2.pth').is_file()
    assert 'Distributed training: True' in first[0] and 'GPU number: 2' in first[0], first[0][-3000:]  # world size
    resumed = train_on_two_nodes(config, work, '--resume', '--cfg-options', 'train_cfg.max_iters=3', *options)
    assert 'resumed epoch: 0, iter: 2' in resumed[0], resumed[0][-3000:]
    assert (work / 'iter_3.pth').is_file()
    steps = [json.loads(line)['step'] for path in work.glob('*/vis_data/scalars.json')
             for line in path.read_text().splitlines()]
    assert sorted(steps) == [1, 2, 3], steps  # the second run went on from iteration 2
