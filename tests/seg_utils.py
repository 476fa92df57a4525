"""Running the project's tools the way a user does, for the end-to-end tests."""
import os
import re
import subprocess
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = 'configs/segmentation/tiny/tiny_{}_synthetic.py'


def run_command(cmd, env, check=True, timeout=900, background=False, name=None):
    """Runs ``cmd`` from the checkout; with ``background``, starts it and returns a function that waits for it
    and returns what a foreground call returns (two one-thread runs side by side use the two cores of the test
    machine)."""
    popen = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait():
        try:
            stdout, stderr = popen.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            popen.kill()
            raise
        proc = subprocess.CompletedProcess(cmd, popen.returncode, stdout, stderr)
        if check and proc.returncode != 0:
            raise AssertionError(f'{name or cmd} failed ({proc.returncode}):\n'
                                 f'{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}')
        return proc
    return wait if background else wait()


# Two threads for a tool, as on a user's 2-core machine; one where pytest-xdist runs a test on each core.
TOOL_THREADS = 1 if int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1')) > 1 else 2


def run_tool(tool, *args, check=True, timeout=900, threads=None, background=False):
    """tools/<tool> in a new interpreter, as a user runs it (see :func:`run_command` for ``background``)."""
    env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS=str(threads or TOOL_THREADS))
    cmd = [sys.executable, os.path.join(ROOT, 'tools', tool), *map(str, args)]
    return run_command(cmd, env, check=check, timeout=timeout, background=background, name=f'{tool} {args}')


def data_options(data_root, extra=()):
    return ['--cfg-options', f'train_dataloader.dataset.data_root={data_root}',
            f'val_dataloader.dataset.data_root={data_root}', f'test_dataloader.dataset.data_root={data_root}',
            *extra]


def last_validation_miou(output: str) -> float:
    """The mIoU of a tools/train.py run's one validation (its last iteration: the evaluator and images of
    tools/test.py, the tiny configs' test loader being their val loader)."""
    found = re.findall(r'Iter\(val\) \[\d+/\d+\]\s+aAcc: [\d.]+\s+mIoU: ([\d.]+)', output)
    assert len(found) == 1, output[-3000:]
    return float(found[0])


def miou_of(stdout: str) -> float:
    m = re.search(r'^\s+mIoU: ([\d.]+)$', stdout, re.M)
    assert m, f'no mIoU in the output of tools/test.py:\n{stdout[-2000:]}'
    return float(m.group(1))


def load_ckpt(path):
    return torch.load(path, map_location='cpu', weights_only=False)
