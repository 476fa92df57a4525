"""Running the project's tools the way a user does, for the end-to-end tests."""
import atexit
import faulthandler
import functools
import json
import logging
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = 'configs/segmentation/tiny/tiny_{}_synthetic.py'


# Two threads for a tool, as on a user's 2-core machine; one where pytest-xdist runs a test on each core.
TOOL_THREADS = 1 if int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1')) > 1 else 2

# A tool's start (torch, mmengine, mmseg, mmdet and this package: seconds of imports per run) is paid once per
# test worker: where it is safe, `python tools/X.py ARGS` runs in a fork of the worker, which has imported them,
# with what a new interpreter would have: its own __main__, argv, sys.path, environment, working directory,
# standard streams, random seeds, logging, warnings, signal and exit handlers, and exit status. Safe: the worker
# computes on one thread (no OpenMP thread pool to copy into the fork: TOOL_THREADS == 1, pytest-xdist) and the
# run's environment differs from the worker's only in variables read while the tool runs. Tests of how a tool
# starts (test_tool_start.py, test_device_env.py, test_hub_checkpoints.py) start interpreters of their own;
# INTERNVIT_TEST_FORK=0 starts one for every run.
FORK_TOOLS = TOOL_THREADS == 1 and os.environ.get('INTERNVIT_TEST_FORK', '1') != '0' and hasattr(os, 'fork')
# environment variables read by the tool as it runs, not as it imports
RUN_TIME_VARIABLES = {'PYTHONUNBUFFERED', 'OMP_NUM_THREADS', 'PYTHONPATH', 'PYTHON', 'PORT', 'PYTHONDONTWRITEBYTECODE'}
TOOLS = os.path.join(ROOT, 'tools')
TESTS = os.path.join(ROOT, 'tests')


def _preload():
    """What every tool imports, imported once by the worker (the forks' common start)."""
    import mmdet.models  # noqa: F401
    import mmengine.runner  # noqa: F401
    import mmseg.models  # noqa: F401

    import internvit_dense.datasets  # noqa: F401
    import internvit_dense.engine.cli  # noqa: F401
    import internvit_dense.models  # noqa: F401


# The warning filters of a new interpreter once a tool's imports are done (numpy, scipy, sympy, torch add theirs as
# they load), for the forks to start with: recorded as this module, the first to import them in a test worker
# (tests/conftest.py imports it first), imports them. Python's own filters first (CPython, not in development mode).
INTERPRETER_FILTERS = [('default', DeprecationWarning, '__main__'), ('ignore', DeprecationWarning, None),
                       ('ignore', PendingDeprecationWarning, None), ('ignore', ImportWarning, None),
                       ('ignore', ResourceWarning, None)]
with warnings.catch_warnings():
    warnings.resetwarnings()
    for action, category, module in reversed(INTERPRETER_FILTERS):
        if module:
            warnings.filterwarnings(action, category=category, module=module)
        else:
            warnings.simplefilter(action, category)
    if TOOL_THREADS == 1:  # before torch loads: no OpenMP pool of more threads for a fork to copy
        os.environ['OMP_NUM_THREADS'] = '1'
    import numpy as np
    import torch
    if TOOL_THREADS == 1:
        torch.set_num_threads(1)
    if FORK_TOOLS:
        _preload()
    IMPORTED_FILTERS = list(warnings.filters)
IMPORTED_PATH = list(sys.path)  # with what those imports appended (not what tests insert later)


@functools.lru_cache(maxsize=None)
def interpreter_path() -> list:
    """sys.path of a new interpreter after its script's folder and PYTHONPATH: the standard library,
    site-packages and .pth entries (asked of one, once per worker), then what the tools' imports appended."""
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    out = subprocess.run([sys.executable, '-c', 'import json, sys; print(json.dumps(sys.path[1:]))'], env=env,
                         capture_output=True, text=True, check=True)
    default = json.loads(out.stdout)
    added = [p for p in IMPORTED_PATH if p not in default and os.path.abspath(p or '.') not in (ROOT, TESTS)]
    return default + added  # pytest's own entries (the checkout, tests/) left out


@functools.lru_cache(maxsize=None)
def interpreter_showwarnmsg():
    """warnings' own way of printing a warning (pytest replaces it with a recorder while a test runs)."""
    import importlib.util
    spec = importlib.util.find_spec('warnings')
    copy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(copy)
    return copy._showwarnmsg_impl


def forked_processes(cmd, env):
    """[(argv, env)] of the processes ``cmd`` starts, where they can be forks of this one; else None.

    ``python tools/X.py ARGS``: one. ``tools/dist_train.sh CONFIG N ARGS`` on one machine: the N workers torchrun
    would start, with the environment torchrun gives them (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT, ...),
    as tools/train.py --launcher pytorch; tests/test_launch.py runs the script itself, torchrun and all."""
    if not FORK_TOOLS or len(cmd) < 2:
        return None
    changed = {k for k in set(env) | set(os.environ) if env.get(k) != os.environ.get(k)}
    if not changed <= RUN_TIME_VARIABLES:
        return None
    if cmd[0] == sys.executable and cmd[1].endswith('.py') and os.path.dirname(os.path.abspath(cmd[1])) == TOOLS:
        return [(list(cmd[1:]), env)]
    if cmd[0] == 'bash' and cmd[1] == os.path.join(TOOLS, 'dist_train.sh') and len(cmd) >= 4:
        config, nproc, args = cmd[2], int(cmd[3]), list(cmd[4:])
        argv = [os.path.join(TOOLS, 'train.py'), config, '--launcher', 'pytorch', *args]
        common = dict(env, MASTER_ADDR='127.0.0.1', MASTER_PORT=env.get('PORT', '29500'), WORLD_SIZE=str(nproc),
                      LOCAL_WORLD_SIZE=str(nproc), GROUP_RANK='0', GROUP_WORLD_SIZE='1', ROLE_NAME='default',
                      ROLE_WORLD_SIZE=str(nproc), TORCHELASTIC_RESTART_COUNT='0', TORCHELASTIC_MAX_RESTARTS='0',
                      TORCHELASTIC_RUN_ID='none', OMP_NUM_THREADS=env.get('OMP_NUM_THREADS', '1'))
        return [(argv, dict(common, RANK=str(r), LOCAL_RANK=str(r), ROLE_RANK=str(r))) for r in range(nproc)]
    return None


def _become_new_interpreter(argv, env, stdout_fd, stderr_fd):
    """In the fork: the state `python ARGV` starts with."""
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(stdout_fd, 1)
    os.dup2(stderr_fd, 2)
    sys.stdin = open(0, closefd=False)
    sys.stdout = open(1, 'w', buffering=1, closefd=False, encoding='utf-8')
    sys.stderr = open(2, 'w', buffering=1, closefd=False, encoding='utf-8', errors='backslashreplace')
    sys.stdout.reconfigure(write_through=True)  # PYTHONUNBUFFERED, as run_tool sets it
    sys.stderr.reconfigure(write_through=True)
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = sys.stdin, sys.stdout, sys.stderr
    os.chdir(ROOT)
    os.environ.clear()
    os.environ.update(env)
    pythonpath = [p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p]
    sys.path[:] = [os.path.dirname(os.path.abspath(argv[0])), *pythonpath, *interpreter_path()]
    sys.argv = list(argv)
    sys.dont_write_bytecode = bool(env.get('PYTHONDONTWRITEBYTECODE'))
    torch.set_num_threads(int(env.get('OMP_NUM_THREADS') or 1))
    random.seed()  # a new interpreter's: from the system's entropy
    np.random.seed()
    torch.seed()
    # pytest's hooks and handlers out, the interpreter's in
    faulthandler.disable()
    sys.excepthook, sys.unraisablehook = sys.__excepthook__, sys.__unraisablehook__
    threading.excepthook = threading.__excepthook__
    for sig in signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP}:
        if callable(signal.getsignal(sig)):
            signal.signal(sig, signal.SIG_DFL)
    if signal.getsignal(signal.SIGINT) == signal.SIG_DFL:  # Python's rule: an ignored SIGINT (a background job's)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # stays ignored in a new interpreter too
    logging.root.handlers.clear()
    logging.root.setLevel(logging.WARNING)
    warnings.filters[:] = IMPORTED_FILTERS
    warnings._filters_mutated()
    warnings._showwarnmsg_impl = interpreter_showwarnmsg()
    from mmengine.utils import ManagerMixin  # loggers, message hubs, visualizers, scopes: none yet
    pending = [ManagerMixin]
    while pending:
        cls = pending.pop()
        pending += cls.__subclasses__()
        if '_instance_dict' in vars(cls):
            cls._instance_dict.clear()
    atexit._clear()


def _run_as_main(path) -> int:
    """runs ``path`` as __main__ and returns the exit status a new interpreter would."""
    import runpy
    try:
        runpy.run_path(path, run_name='__main__')
        code = 0
    except SystemExit as stop:
        code = stop.code
        if code is None:
            code = 0
        elif not isinstance(code, int):
            print(code, file=sys.stderr)
            code = 1
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    threading._shutdown()
    atexit._run_exitfuncs()
    return code


class ForkedTool:
    """The part of subprocess.Popen that run_command uses, for a tool's processes forked from this one. As torchrun
    does, a worker that fails stops the others, and the launch then exits with 1."""

    def __init__(self, cmd, processes, preexec_fn=None):
        interpreter_path(), interpreter_showwarnmsg()  # worked out here, once, not in every fork
        self._preexec_fn = preexec_fn
        self.args = cmd
        self.returncode = None
        self._out, self._err = tempfile.TemporaryFile(), tempfile.TemporaryFile()  # the processes share them
        self._codes = {}
        self._pids = [self._fork(argv, env) for argv, env in processes]

    def _fork(self, argv, env):
        pid = os.fork()
        if pid:
            return pid
        code = 1
        try:
            _become_new_interpreter(argv, env, self._out.fileno(), self._err.fileno())
            if self._preexec_fn:
                self._preexec_fn()
            code = _run_as_main(argv[0])
        except BaseException:
            traceback.print_exc()
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)

    def poll(self):
        if self.returncode is None:
            for pid in self._pids:
                if pid not in self._codes:
                    done, status = os.waitpid(pid, os.WNOHANG)
                    if done:
                        self._codes[pid] = os.waitstatus_to_exitcode(status)
            if any(self._codes.values()):
                self.kill()
            if len(self._codes) == len(self._pids):
                codes = [self._codes[pid] for pid in self._pids]
                self.returncode = codes[0] if len(codes) == 1 else int(any(codes))
        return self.returncode

    def kill(self):
        for pid in self._pids:
            if pid not in self._codes:
                os.kill(pid, signal.SIGKILL)

    def wait(self):
        """Blocks until every process has ended (and is reaped: after :meth:`kill`, no zombie stays behind)."""
        while self.poll() is None:
            for pid in self._pids:
                if pid not in self._codes:
                    self._codes[pid] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        return self.returncode

    def communicate(self, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.args, timeout)
            time.sleep(0.05)
        return tuple(self._read(f) for f in (self._out, self._err))

    @staticmethod
    def _read(file):
        file.seek(0)
        text = file.read().decode('utf-8', errors='replace')
        file.close()
        return text


def run_command(cmd, env, check=True, timeout=900, background=False, name=None, preexec_fn=None):
    """Runs ``cmd`` from the checkout; with ``background``, starts it and returns a function that waits for it
    and returns what a foreground call returns (two one-thread runs side by side use the two cores of the test
    machine). ``preexec_fn``: as subprocess.Popen's, called in the new process before the tool runs."""
    processes = forked_processes(cmd, env)
    if processes:
        popen = ForkedTool(cmd, processes, preexec_fn)
    else:
        popen = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 preexec_fn=preexec_fn)

    def wait():
        try:
            stdout, stderr = popen.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()  # reaped, not left a zombie for the rest of the run
            raise
        proc = subprocess.CompletedProcess(cmd, popen.returncode, stdout, stderr)
        if check and proc.returncode != 0:
            raise AssertionError(f'{name or cmd} failed ({proc.returncode}):\n'
                                 f'{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}')
        return proc
    return wait if background else wait()


def run_tool(tool, *args, check=True, timeout=900, threads=None, background=False):
    """tools/<tool> as a user runs it: a new interpreter, or a fork that starts as one (see FORK_TOOLS; and
    :func:`run_command` for ``background``)."""
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
