"""A warm interpreter for the end-to-end tests' tool runs: ``python tools/X.py ARGS`` as a fork of a process
that has already imported what every tool imports.

Why: a tool's start is its imports (torch, mmengine, mmseg and mmdet with every model they register, transformers
through mmdet's GLIP helpers): 12 of the 18 seconds a 2-iteration tiny training took on a 2-core machine, paid by
each of the suite's ~100 tool runs. The server imports them once, in the order the tools do
(``internvit_dense.engine`` first), runs no torch op and starts no thread, and forks one child per run; the child
takes the run's cwd, environment, argv, thread count and output files and runs the script as ``__main__``, as
``python SCRIPT`` would, and exits with the script's status. The test sees a process (a pid it can kill) and a
``subprocess.CompletedProcess``.

What a fork cannot give, the caller keeps a new interpreter for (``seg_utils.run_command`` decides): any
environment other than the server's own apart from the thread variables and pytest's own (PYTHONPATH, HF_*, CUDA_*, ports:
variables read at interpreter start or at import), commands other than ``python SCRIPT ARGS``.
"""
import array
import atexit
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# what a run's environment may differ in from the server's: read by the child itself (torch.set_num_threads), or
# not read before a run starts (pytest's name of the running test, the launch scripts' interpreter and port,
# torch.distributed's rendezvous, which an in-process DeepSpeed run of a test leaves in os.environ); the child's
# os.environ is the run's in any case
FORK_SAFE_VARS = ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'PYTHONUNBUFFERED', 'PYTEST_CURRENT_TEST', 'PYTHON', 'PORT',
                  'RANK', 'LOCAL_RANK', 'WORLD_SIZE', 'LOCAL_WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT',
                  'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD')
# the environment at collection, before any test changes it: the server's
BASE_ENV = dict(os.environ, PYTHONUNBUFFERED='1')


# ------------------------------------------------------------------ the server (its own process)
def _preload():
    import internvit_dense.engine.cli  # noqa: F401  first, as in every tool: the import guards
    import mmdet.models  # noqa: F401
    import mmengine.runner  # noqa: F401
    import mmseg.models  # noqa: F401

    import internvit_dense.datasets  # noqa: F401
    import internvit_dense.models  # noqa: F401


def _run_child(request, out_fd, err_fd):
    """In the forked child: become ``python SCRIPT ARGS`` and never return."""
    code = 1
    try:
        os.setpgid(0, 0)  # its own group, as a new process would be for the test's kill
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        for fd in (devnull, out_fd, err_fd):
            os.close(fd)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.chdir(request['cwd'])
        os.environ.clear()
        os.environ.update(request['env'])
        import random

        import numpy as np
        import torch
        random.seed()  # a new interpreter seeds these from the OS, not from its parent
        np.random.seed()
        torch.set_num_threads(int(request['env'].get('OMP_NUM_THREADS') or os.cpu_count()))
        script = request['argv'][0]
        sys.argv = list(request['argv'])
        sys.path[0] = os.path.dirname(os.path.abspath(script))
        import runpy
        try:
            runpy.run_path(script, run_name='__main__')
            code = 0
        except SystemExit as e:
            if e.code is None:
                code = 0
            elif isinstance(e.code, int):
                code = e.code
            else:
                print(e.code, file=sys.stderr)
                code = 1
        except BaseException:
            import traceback
            traceback.print_exc()
            code = 1
        atexit._run_exitfuncs()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve(sock_fd):
    sock = socket.socket(fileno=sock_fd)
    _preload()
    sock.sendall(b'{"ready": true}\n')
    children = set()
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ)
    buffer = b''
    while True:
        for pid in list(children):  # reap: report each finished run
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                children.discard(pid)
                sock.sendall(json.dumps(dict(exited=pid, returncode=os.waitstatus_to_exitcode(status))).encode()
                             + b'\n')
        if not selector.select(timeout=0.05):
            continue
        fds = array.array('i')
        data, ancdata, _, _ = sock.recvmsg(65536, socket.CMSG_SPACE(2 * fds.itemsize))
        if not data:
            return  # the tests ended
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
        buffer += data
        line, _, buffer = buffer.partition(b'\n')
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            sock.close()
            _run_child(request, fds[0], fds[1])
        for fd in fds:
            os.close(fd)
        children.add(pid)
        sock.sendall(json.dumps(dict(started=pid)).encode() + b'\n')


# ------------------------------------------------------------------ the tests' side
class ToolServer:
    def __init__(self):
        self.env = BASE_ENV
        ours, theirs = socket.socketpair()
        self.sock = ours
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), str(theirs.fileno())],
                                     pass_fds=[theirs.fileno()], cwd=ROOT, env=self.env)
        theirs.close()
        self.lines = b''
        self.exited = {}
        ready = self._message(timeout=600)
        assert ready.get('ready'), ready

    def _message(self, timeout):
        deadline = time.monotonic() + timeout
        while b'\n' not in self.lines:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                raise TimeoutError from None
            if not data:
                raise RuntimeError(f'the tool server ended (exit status {self.proc.poll()})')
            self.lines += data
        line, _, self.lines = self.lines.partition(b'\n')
        return json.loads(line)

    def accepts(self, cmd, env):
        """Whether ``cmd`` with ``env`` runs the same in a fork of the server as in a new interpreter."""
        if len(cmd) < 2 or cmd[0] != sys.executable or not str(cmd[1]).endswith('.py') or self.proc.poll() is not None:
            return False
        differ = {k for k in set(env) | set(self.env) if env.get(k) != self.env.get(k)} - set(FORK_SAFE_VARS)
        for name in differ:
            REFUSED[name] = REFUSED.get(name, 0) + 1
        return not differ

    def start(self, cmd, cwd, env):
        """Starts ``cmd`` (``python SCRIPT ARGS``); returns a handle with ``pid``, ``kill()`` and
        ``wait(timeout) -> CompletedProcess``."""
        out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
        request = json.dumps(dict(argv=[str(a) for a in cmd[1:]], cwd=str(cwd), env=env)).encode() + b'\n'
        self.sock.sendmsg([request], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array('i', [out.fileno(),
                                                                                              err.fileno()]))])
        while True:
            message = self._message(timeout=60)
            if 'started' in message:
                return _Run(self, message['started'], cmd, out, err)
            self.exited[message['exited']] = message['returncode']

    def returncode(self, pid, timeout):
        deadline = time.monotonic() + timeout
        while pid not in self.exited:
            message = self._message(timeout=max(0.01, deadline - time.monotonic()))
            if 'exited' in message:
                self.exited[message['exited']] = message['returncode']
        return self.exited.pop(pid)

    def close(self):
        self.sock.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class _Run:
    def __init__(self, server, pid, cmd, out, err):
        self.server, self.pid, self.cmd, self.out, self.err = server, pid, cmd, out, err

    def kill(self):
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def wait(self, timeout):
        try:
            returncode = self.server.returncode(self.pid, timeout)
        except TimeoutError:
            self.kill()
            raise subprocess.TimeoutExpired(self.cmd, timeout) from None
        texts = []
        for f in (self.out, self.err):
            f.seek(0)
            texts.append(f.read().decode(errors='replace'))
            f.close()
        return subprocess.CompletedProcess(self.cmd, returncode, *texts)


_server = []
RUNS = dict(forked=0, new=0)  # how the test run's tool runs ran (tests/conftest.py prints it)
REFUSED = {}  # variable -> runs it sent to a new interpreter


def tool_server():
    """The test run's server, started on first use (None where it cannot start: the caller runs a new
    interpreter)."""
    if not _server:
        try:
            _server.append(ToolServer())
            atexit.register(_server[0].close)
        except Exception as e:  # noqa: BLE001  a test run without the server is slower, not wrong
            print(f'tool server not started ({type(e).__name__}: {e}): new interpreters instead', file=sys.stderr)
            _server.append(None)
    return _server[0]


if __name__ == '__main__':
    serve(int(sys.argv[1]))
