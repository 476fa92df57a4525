"""The test harness's forked tool runs (tests/seg_utils.py, ForkedTool): a tool run forked from the test worker
starts from what a new interpreter starts from, and says and exits what it would say and exit."""
import json
import os
import subprocess
import sys

import pytest
from seg_utils import FORK_TOOLS, ROOT, ForkedTool, forked_processes

forked_only = pytest.mark.skipif(not FORK_TOOLS, reason='tool runs are forked on pytest-xdist workers only')

# What a script sees of its process at start, as JSON: the state ForkedTool resets (the modules already imported
# are what it keeps, on purpose).
PROBE = r'''
import json, logging, os, signal, sys, threading, warnings
import numpy, torch  # what a test worker imports first (tests/seg_utils.py), then what every tool imports
import mmdet.models, mmengine.runner, mmseg.models
import internvit_dense.datasets, internvit_dense.engine.cli, internvit_dense.models
import mmengine.logging
state = dict(
    argv=sys.argv, path=sys.path, cwd=os.getcwd(), main=__name__, file=os.path.basename(__file__),
    environment={k: os.environ.get(k) for k in ('PROBE_VALUE', 'PYTHONPATH', 'OMP_NUM_THREADS')},
    filters=[(f[0], f[2].__name__, getattr(f[3], 'pattern', f[3])) for f in warnings.filters],
    signals={s.name: repr(signal.getsignal(s)) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP,
                                                         signal.SIGPIPE, signal.SIGXFSZ, signal.SIGUSR1)},
    root_handlers=len(logging.root.handlers), root_level=logging.root.level,
    hooks=[sys.excepthook is sys.__excepthook__, threading.excepthook is threading.__excepthook__,
           sys.unraisablehook is sys.__unraisablehook__],
    loggers=len(mmengine.logging.MMLogger._instance_dict), threads=threading.active_count(),
    stdin=sys.stdin.read(), stdout_tty=sys.stdout.isatty(), bytecode=sys.dont_write_bytecode)
print(json.dumps(state))
warnings.warn('a warning as a new interpreter prints it')
import atexit
atexit.register(lambda: print('at exit', flush=True))
sys.exit(int(sys.argv[1]))
'''


def both(tmp_path, *args, env_extra=None):
    script = tmp_path / 'probe.py'
    script.write_text(PROBE)
    env = dict(os.environ, PROBE_VALUE='x', PYTHONPATH=str(tmp_path / 'extra'), PYTHONDONTWRITEBYTECODE='1',
               **(env_extra or {}))
    cmd = [sys.executable, str(script), *args]
    new = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    forked = ForkedTool(cmd, [(cmd[1:], env)])
    out, err = forked.communicate(timeout=300)
    return new, subprocess.CompletedProcess(cmd, forked.returncode, out, err)


def state_and_after(stdout):
    lines = stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith('{'))
    return json.loads(lines[at]), lines[at + 1:]


@forked_only
def test_a_forked_run_starts_says_and_exits_as_a_new_interpreter(tmp_path):
    new, forked = both(tmp_path, '3')
    assert forked.returncode == new.returncode == 3
    # what the new interpreter printed as it imported (DeepSpeed's accelerator line) the fork printed in the worker
    (first, after_new), (second, after_forked) = (state_and_after(p.stdout) for p in (new, forked))
    assert first['path'][0] == str(tmp_path) and first['environment']['PROBE_VALUE'] == 'x'
    assert first == second, json.dumps({k: (first[k], second[k]) for k in first if first[k] != second[k]}, indent=1)
    assert after_forked == after_new == ['at exit']
    assert forked.stderr == new.stderr and 'a warning as a new interpreter prints it' in new.stderr


@forked_only
def test_an_exception_is_printed_and_exits_1_as_in_a_new_interpreter(tmp_path):
    new, forked = both(tmp_path, 'not a number')
    assert forked.returncode == new.returncode == 1
    assert forked.stderr.splitlines()[-1] == new.stderr.splitlines()[-1] == \
        "ValueError: invalid literal for int() with base 10: 'not a number'"


def test_what_is_forked_and_what_is_not():
    tool = os.path.join(ROOT, 'tools', 'train.py')
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1')
    if 'PYTEST_XDIST_WORKER' not in os.environ:  # one process: torch's OpenMP pool may exist, nothing is forked
        assert forked_processes([sys.executable, tool], env) is None
        return
    assert forked_processes([sys.executable, tool, 'x.py'], env) == [([tool, 'x.py'], env)]
    assert forked_processes([sys.executable, '-c', 'pass'], env) is None  # not a tool
    assert forked_processes([sys.executable, tool], dict(env, HF_HUB_OFFLINE='1')) is None  # read at import
    ranks = forked_processes(['bash', os.path.join(ROOT, 'tools', 'dist_train.sh'), 'c.py', '2', '--resume'],
                             dict(env, PORT='29555'))
    assert [argv for argv, _ in ranks] == [[tool, 'c.py', '--launcher', 'pytorch', '--resume']] * 2
    assert [(e['RANK'], e['LOCAL_RANK'], e['WORLD_SIZE'], e['MASTER_PORT']) for _, e in ranks] == \
        [('0', '0', '2', '29555'), ('1', '1', '2', '29555')]


def test_a_failing_rank_stops_the_others_as_torchrun_does(tmp_path):
    script = tmp_path / 'rank.py'
    script.write_text('import os, sys, time\nif os.environ["RANK"] == "1":\n    sys.exit(5)\ntime.sleep(300)\n')
    cmd = [sys.executable, str(script)]
    processes = [(cmd[1:], dict(os.environ, RANK=str(r))) for r in range(2)]
    proc = ForkedTool(cmd, processes)
    proc.communicate(timeout=60)  # rank 0 would sleep for 300 s
    assert proc.returncode == 1


@forked_only
@pytest.mark.parametrize('forked', [True, False], ids=['forked', 'new-interpreter'])
def test_a_run_past_its_timeout_is_killed_and_reaped(tmp_path, monkeypatch, forked):
    import seg_utils
    script = tmp_path / 'sleeper.py'
    script.write_text('import time\ntime.sleep(300)\n')
    cmd = [sys.executable, str(script)]
    # run_command forks the tools' scripts only: this one is forked (or not) as a tool's would be
    monkeypatch.setattr(seg_utils, 'forked_processes', lambda cmd, env: [(cmd[1:], env)] if forked else None)
    before = set(os.listdir('/proc'))
    with pytest.raises(subprocess.TimeoutExpired):
        seg_utils.run_command(cmd, dict(os.environ), timeout=3)
    left = []
    for pid in set(os.listdir('/proc')) - before:
        try:
            with open(f'/proc/{pid}/stat') as f:
                state, parent = f.read().rsplit(')', 1)[1].split()[:2]
        except OSError:  # not a process, or ended meanwhile
            continue
        if int(parent) == os.getpid():
            left.append(f'{pid} ({state})')
    assert not left, f'the killed run left children of this worker behind: {left}'
