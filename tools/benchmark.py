#!/usr/bin/env python
"""Throughput and memory of our InternViT against transformers' InternVLVisionModel, on CPU.

One run measures, with the same architecture, dtype and weights:

* backbone forward (eval, no grad), ours (``attn_impl='auto'``) and transformers' (``sdpa``);
* a training step (forward, cross-entropy on a per-patch linear head, backward, SGD step):
  ours with a frozen backbone (only the head learns), ours full, transformers full;
* ``torch.mm`` at the model's largest GEMM shape (fc1), as this machine's dense-matmul
  peak, against which the forward's analytic FLOP rate is compared.

How it measures:

* Every measurement has a process of its own, forked from a server process that did
  the slow imports once. After building its model and input, the process resets its
  RSS high-water mark (``/proc/self/clear_refs``); its peak memory is then reported as
  ``ru_maxrss`` minus the RSS at that point: what the steps needed on top of weights
  and input (activations, gradients, allocator slack; torch's CPU allocator keeps no
  cache of its own, so RSS is what it holds).
* Measurements that are compared with each other (ours and transformers' forward and
  our frozen step; ours and transformers' full step) stay alive side by side and are
  stepped in alternating rounds, so load from other processes hits them alike and
  their ratios stay meaningful on a shared machine. When they would not fit in memory
  together (or with ``--sequential``) they run one after another.
* CPU time used by other processes during the timed steps is reported, since it makes
  every absolute number pessimistic; ``--wait-idle SECONDS`` waits for a quiet CPU first.

Usage::

    python tools/benchmark.py                      # 300M shape, 224px, batch 4, fp32
    python tools/benchmark.py --dtype bf16 --batch 8
    python tools/benchmark.py --quick              # tiny model, a few seconds: smoke test

Results are printed as they come, then as a table, and written as JSON to
``work_dirs/benchmark/<timestamp>.json`` (or ``--json PATH``).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import os.path as osp
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

# A 6B-style (RMSNorm, qk-norm) model small enough to build and run in well under a second.
TINY_ARCH = dict(embed_dims=64, depth=2, num_heads=4, mlp_dims=256, norm_type='rms_norm', qk_normalization=True,
                 qkv_bias=False, layer_norm_eps=1e-6)
QUICK = dict(arch='tiny', img_size=56, batch=2, repeats=3, warmup=1)
NUM_CLASSES = 16  # of the per-patch linear head in the training steps
PATCH_SIZE = 14

TARGET_RATIO = 1.0           # ours / transformers images/s
TARGET_PEAK_FRACTION = 0.85  # of the torch.mm rate at the model's largest GEMM
TARGET_FROZEN_COST = 1.15    # frozen training step time / forward time
CONTENDED = 0.25             # cores used by other processes above which a measurement is flagged


# ====================================================================== measurement side
# Runs in the server and the processes it forks. The driver never imports torch, so it
# stays small and starts fast.

def _rss_kib() -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
    raise RuntimeError('no VmRSS in /proc/self/status')


def _maxrss_kib() -> int:
    import resource
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == 'darwin' else peak  # bytes on macOS, KiB on Linux


def _memory_baseline() -> int:
    """Marks 'now' as the zero of the peak-memory measurement; returns the baseline in KiB.

    Building a model can peak above its steady state (a state dict next to the
    parameters), which would hide the steps' own peak under ru_maxrss. Writing 5
    to clear_refs resets the kernel's high-water mark to the current RSS.
    """
    import gc
    gc.collect()
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return _rss_kib()
    except OSError:  # not Linux, or /proc read-only: the build's own peak may then mask the steps'
        return _maxrss_kib()


def _memory_report(base_kib: int) -> dict:
    peak = _maxrss_kib()
    return dict(rss_base_mib=base_kib / 1024, rss_peak_mib=peak / 1024,
                rss_extra_mib=max(peak - base_kib, 0) / 1024)


def _cpu_snapshot():
    """(CPU s the whole machine has spent busy, CPU s this process has used)."""
    busy = float('nan')
    try:
        with open('/proc/stat') as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        busy = (sum(fields[:8]) - idle) / os.sysconf('SC_CLK_TCK')  # guest time is already in user
    except (OSError, ValueError):
        pass
    t = os.times()
    return busy, t.user + t.system


def _torch_setup(spec):
    import torch
    torch.set_num_threads(spec['threads'])
    return torch, dict(fp32=torch.float32, bf16=torch.bfloat16)[spec['dtype']]


def _build_ours(spec, frozen: bool):
    from internvit_dense.models.backbones import InternViT
    # Built on the meta device and filled from the saved weights: no random-init pass, no second copy.
    return InternViT.from_pretrained(osp.join(spec['workdir'], 'ours.pth'), arch=spec['arch'],
                                     img_size=spec['img_size'], patch_size=PATCH_SIZE,
                                     pretrain_size=spec['img_size'], attn_impl='auto', frozen=frozen)


def _build_theirs(spec):
    from transformers import InternVLVisionModel
    return InternVLVisionModel.from_pretrained(osp.join(spec['workdir'], 'transformers'),
                                               attn_implementation='sdpa')


def _make_resident(model):
    """Reads every parameter once. transformers leaves safetensors weights memory-mapped, so
    they would otherwise fault in during the timed steps and be counted as their memory."""
    for p in model.parameters():
        p.detach().sum()
    return model


def _images(torch, spec, dtype, generator):
    return torch.randn(spec['batch'], 3, spec['img_size'], spec['img_size'], generator=generator).to(dtype)


# Each setup builds what it measures and returns (step, finish): ``step()`` runs one timed
# iteration (None when there is nothing to repeat) and ``finish()`` returns the result dict.

def setup_prep(spec):
    """Random weights for ours, saved in both layouts; checks that both models compute the same."""
    torch, _ = _torch_setup(spec)
    from internvit_dense.checkpoint import FORMAT_TRANSFORMERS, save_checkpoint
    from internvit_dense.models.backbones import InternViT
    torch.manual_seed(0)
    arch = TINY_ARCH if spec['arch'] == 'tiny' else spec['arch']
    ours = InternViT(arch=arch, img_size=spec['img_size'], patch_size=PATCH_SIZE, pretrain_size=spec['img_size'],
                     attn_impl='auto').eval()
    save_checkpoint(ours, osp.join(spec['workdir'], 'ours.pth'))
    save_checkpoint(ours, osp.join(spec['workdir'], 'transformers'), fmt=FORMAT_TRANSFORMERS)
    theirs = _build_theirs(spec).eval()
    x = _images(torch, dict(spec, batch=1), torch.float32, torch.Generator().manual_seed(1))
    with torch.no_grad():
        diff = (ours.forward_features(x) - theirs(pixel_values=x).last_hidden_state).abs().max().item()
    result = dict(arch=ours.arch, params=sum(p.numel() for p in ours.parameters()), max_abs_diff=diff)
    return None, lambda: result


def setup_matmul(spec):
    """GFLOP/s of torch.mm at (batch*tokens x embed) @ (embed x mlp): fc1, the model's largest GEMM."""
    torch, dtype = _torch_setup(spec)
    m, k, n = spec['gemm']
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(m, k, generator=gen).to(dtype)
    w = torch.randn(n, k, generator=gen).to(dtype)
    out = torch.empty(m, n, dtype=dtype)
    flops = 2.0 * m * k * n
    # nn.Linear multiplies by a transposed (out, in) weight; the plain layout is measured too and
    # the faster counts as the peak, so the target is not eased by an unlucky layout.
    layouts = {'x @ w.t(), the nn.Linear layout': w.t(), 'x @ w, contiguous': w.t().contiguous()}
    found = {}
    for name, rhs in layouts.items():
        for _ in range(max(spec['warmup'], 1)):
            torch.mm(x, rhs, out=out)
        # Calls per sample: enough for ~0.2 s, counted over a batch of calls rather than
        # one, which a moment of contention would make look many times too slow or fast.
        calls, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 0.05:
            torch.mm(x, rhs, out=out)
            calls += 1
        calls = max(1, int(calls * 0.2 / (time.perf_counter() - t0)))
        rates, busy0 = [], _cpu_snapshot()
        t_all = time.perf_counter()
        # The best sample is the peak: many short samples catch a quiet moment on a busy machine.
        for _ in range(max(spec['repeats'], 8)):
            t0 = time.perf_counter()
            for _ in range(calls):
                torch.mm(x, rhs, out=out)
            rates.append(flops * calls / (time.perf_counter() - t0) / 1e9)
            if time.perf_counter() - t_all > 5:  # bounded even when a busy machine slows every call
                break
        wall, busy1 = time.perf_counter() - t_all, _cpu_snapshot()
        others = ((busy1[0] - busy0[0]) - (busy1[1] - busy0[1])) / wall
        found[name] = dict(gflops_max=max(rates), gflops_median=statistics.median(rates), other_cores=max(others, 0),
                           calls=calls)
    peak_layout = max(found, key=lambda k: found[k]['gflops_max'])
    result = dict(layouts=found, peak_layout=peak_layout, peak_gflops=found[peak_layout]['gflops_max'],
                  other_cores=max(f['other_cores'] for f in found.values()))
    if not spec.get('paired'):
        return None, lambda: result
    # Stepped in the forward's rounds, so that the forward's share of the matmul rate can be
    # taken under the same load; one step lasts ~1 s.
    rhs, calls = layouts[peak_layout], 5 * found[peak_layout]['calls']

    def step():
        for _ in range(calls):
            torch.mm(x, rhs, out=out)

    return step, lambda: dict(result, flop_per_step=flops * calls)


def setup_forward(spec):
    torch, dtype = _torch_setup(spec)
    if spec['impl'] == 'ours':
        model = _make_resident(_build_ours(spec, frozen=False).to(dtype).eval())
        run = model  # the mmseg/mmdet entry point: feature maps of out_indices
    else:
        model = _make_resident(_build_theirs(spec).to(dtype).eval())

        def run(x):
            return model(pixel_values=x).last_hidden_state
    x = _images(torch, spec, dtype, torch.Generator().manual_seed(1))

    def step():
        with torch.no_grad():
            run(x)

    return step, dict


def setup_train(spec):
    torch, dtype = _torch_setup(spec)
    import torch.nn.functional as F
    frozen = spec['mode'] == 'frozen'
    if spec['impl'] == 'ours':
        model = _make_resident(_build_ours(spec, frozen=frozen).to(dtype).train())

        def tokens(x):  # (B, C, h, w) map -> (B, h*w, C) patch tokens
            return model(x)[-1].flatten(2).transpose(1, 2)
    else:
        model = _make_resident(_build_theirs(spec).to(dtype).train())

        def tokens(x):
            return model(pixel_values=x).last_hidden_state[:, 1:]
    head = torch.nn.Linear(spec['arch']['embed_dims'], NUM_CLASSES).to(dtype)
    params = [p for p in list(model.parameters()) + list(head.parameters()) if p.requires_grad]
    # Plain SGD: the cheapest optimizer, so the step measures the model rather than optimizer state.
    opt = torch.optim.SGD(params, lr=1e-4)
    gen = torch.Generator().manual_seed(1)
    x = _images(torch, spec, dtype, gen)
    labels = torch.randint(0, NUM_CLASSES, (spec['batch'] * (spec['img_size'] // PATCH_SIZE) ** 2,), generator=gen)
    losses = []

    def step():
        opt.zero_grad(set_to_none=True)
        logits = head(tokens(x)).reshape(-1, NUM_CLASSES)
        loss = F.cross_entropy(logits.float(), labels)
        loss.backward()
        opt.step()
        losses.append(loss.item())

    def finish():
        if not all(abs(v) < float('inf') for v in losses):  # also false for NaN
            raise RuntimeError(f'non-finite training loss: {losses}')
        return dict(trainable_params=sum(p.numel() for p in params))

    return step, finish


SETUPS = dict(prep=setup_prep, matmul=setup_matmul, forward=setup_forward, train=setup_train)


def _send(stream, obj):
    stream.write(json.dumps(obj) + '\n')
    stream.flush()


def measurement_process(spec, commands, replies):
    """One measurement's life: build, warm up, then timed steps on request, then the result."""
    import resource
    step, finish = SETUPS[spec['kind']](spec)
    base = None
    if step is not None:
        base = _memory_baseline()
        for _ in range(spec['warmup']):
            step()
    _send(replies, dict(ok=True))
    for line in commands:
        cmd = json.loads(line)['cmd']
        if cmd == 'step':
            before, faults = _cpu_snapshot(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t0 = time.perf_counter()
            step()
            seconds = time.perf_counter() - t0
            after = _cpu_snapshot()
            # Page faults: memory the allocator handed back to the OS and took again, zeroed, this step.
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
            _send(replies, dict(ok=True, seconds=seconds, machine_cpu=after[0] - before[0],
                                own_cpu=after[1] - before[1], page_faults=faults))
        elif cmd == 'finish':
            result = finish()
            if base is not None:
                result.update(_memory_report(base))
            _send(replies, dict(ok=True, result=result))
            return


class _Child:
    def __init__(self, pid, commands, replies, log):
        self.pid, self.commands, self.replies, self.log = pid, commands, replies, log

    def failure(self) -> str:
        """Why the process stopped answering, with the end of its log."""
        _, status = os.waitpid(self.pid, 0)
        how = (f'exit code {os.WEXITSTATUS(status)}' if os.WIFEXITED(status)
               else f'signal {os.WTERMSIG(status)} (killed: out of memory?)')
        with open(self.log, errors='replace') as f:
            tail = ''.join(f.readlines()[-15:])
        return f'{how}\n{tail}'


def _fork_child(spec, children, to_driver) -> _Child:
    log = osp.join(spec['workdir'], f"{spec['name'].replace('/', '_')}.log")
    cmd_r, cmd_w = os.pipe()
    rep_r, rep_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            # Only the server may talk to the driver and the other children; stray copies of
            # their pipe ends here would keep them from seeing end-of-file if we died.
            for other in children.values():
                os.close(other.commands.fileno())
                os.close(other.replies.fileno())
            os.close(to_driver.fileno())
            os.close(cmd_w)
            os.close(rep_r)
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            with os.fdopen(cmd_r) as commands, os.fdopen(rep_w, 'w') as replies:
                try:
                    measurement_process(spec, commands, replies)
                    code = 0
                except BaseException as e:
                    import traceback
                    traceback.print_exc()
                    _send(replies, dict(ok=False, error=f'{type(e).__name__}: {e}'))
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    os.close(cmd_r)
    os.close(rep_w)
    return _Child(pid, os.fdopen(cmd_w, 'w'), os.fdopen(rep_r), log)


def serve(allocator: str):
    """Imports the heavy stack once, then forks one process per measurement and relays to it.

    Importing internvit_dense.models pulls in mmcv, mmengine and deepspeed (10-20 s);
    paying that once instead of per measurement is what lets --quick finish in seconds.
    Nothing here runs a torch op before forking, so the children start without an
    inherited OpenMP pool.

    Protocol: one JSON request per stdin line ({cmd: start|step|finish, name, spec}),
    one JSON reply per line on the original stdout; the libraries' own prints are sent
    to stderr so they cannot corrupt it.
    """
    import gc
    to_driver = os.fdopen(os.dup(1), 'w')
    os.dup2(2, 1)
    t0 = time.perf_counter()
    import torch  # noqa: F401
    from internvit_dense.engine.workarounds import keep_freed_memory_on_cpu
    kept = allocator == 'keep' and keep_freed_memory_on_cpu()  # before any big allocation; the forks inherit it
    import internvit_dense.models  # noqa: F401  registers into mmseg/mmdet, as users get it
    from internvit_dense.checkpoint import save_checkpoint  # noqa: F401
    from transformers import InternVLVisionModel  # noqa: F401
    gc.collect()
    gc.freeze()  # keeps the children's garbage collector from copying every imported object's page
    _send(to_driver, dict(ok=True, import_seconds=time.perf_counter() - t0, freed_memory_kept=kept))
    children = {}
    try:
        for line in sys.stdin:
            req = json.loads(line)
            name = req['name']
            if req['cmd'] == 'start':
                children[name] = _fork_child(dict(req['spec'], name=name), children, to_driver)
            else:
                _send(children[name].commands, dict(cmd=req['cmd']))
            child = children[name]
            reply = child.replies.readline()
            if not reply:
                reply = json.dumps(dict(ok=False, error=child.failure()))
                del children[name]
            elif req['cmd'] == 'finish' or not json.loads(reply)['ok']:
                child.commands.close()
                os.waitpid(child.pid, 0)
                del children[name]
            to_driver.write(reply if reply.endswith('\n') else reply + '\n')
            to_driver.flush()
    finally:
        for child in children.values():  # the driver went away mid-measurement
            os.kill(child.pid, signal.SIGKILL)
            os.waitpid(child.pid, 0)


# ====================================================================== driver side
def forward_flops(arch: dict, img_size: int, in_channels: int = 3) -> float:
    """Forward FLOPs per image (2 per multiply-add): patch embedding and the matmuls of every block.

    Norms, softmax, GELU, layer scale and residual adds are elementwise and left out;
    they are a fraction of a percent of the total at these widths.
    """
    c, m, depth = arch['embed_dims'], arch['mlp_dims'], arch['depth']
    patches = (img_size // PATCH_SIZE) ** 2
    t = patches + 1  # the cls token
    patch_embed = 2 * patches * in_channels * PATCH_SIZE ** 2 * c
    block = (2 * t * c * 3 * c      # qkv
             + 2 * t * t * c * 2    # q @ k^T and attn @ v, summed over heads
             + 2 * t * c * c        # output projection
             + 2 * t * c * m * 2)   # fc1 and fc2
    return float(patch_embed + depth * block)


class MeasurementError(RuntimeError):
    pass


class Server:
    """The driver's handle on the ``--_server`` process (see :func:`serve`)."""

    def __init__(self, threads: int, allocator: str, log_path: str):
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                   TRANSFORMERS_VERBOSITY='error', PYTHONWARNINGS='ignore',
                   PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get('PYTHONPATH')])))
        self.log_path = log_path
        self.log = open(log_path, 'w')
        self.proc = subprocess.Popen([sys.executable, osp.abspath(__file__), '--_server', '--allocator', allocator],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     env=env, cwd=ROOT)
        hello = self._read('server')
        self.import_seconds, self.freed_memory_kept = hello['import_seconds'], hello['freed_memory_kept']

    def _read(self, name) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            with open(self.log_path, errors='replace') as f:
                tail = ''.join(f.readlines()[-15:])
            raise MeasurementError(f'the measurement server died (exit code {self.proc.returncode}):\n{tail}')
        reply = json.loads(line)
        if not reply['ok']:
            raise MeasurementError(f"{name} failed: {reply['error']}")
        return reply

    def request(self, cmd: str, name: str, spec: dict = None) -> dict:
        self.proc.stdin.write(json.dumps(dict(cmd=cmd, name=name, spec=spec)) + '\n')
        self.proc.stdin.flush()
        return self._read(name)

    def run_once(self, name: str, spec: dict) -> dict:
        self.request('start', name, spec)
        return self.request('finish', name)['result']

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait()
        self.log.close()


def measure_together(server: Server, members, repeats: int, errors: dict) -> dict:
    """Builds and warms up every member, then times them in alternating rounds (A B C, C B A, ...)."""
    alive = []
    for name, spec in members:
        try:
            server.request('start', name, spec)
            alive.append(name)
        except MeasurementError as e:
            errors[name] = str(e)
            print(f'  {name}: FAILED\n{e}', flush=True)
    samples = {name: [] for name in alive}
    for r in range(repeats):
        shown = []
        for name in (alive if r % 2 == 0 else alive[::-1]):
            try:
                s = server.request('step', name)
            except MeasurementError as e:
                errors[name] = str(e)
                print(f'  {name}: FAILED\n{e}', flush=True)
                continue
            samples[name].append(s)
            shown.append(f"{name} {s['seconds']:.3f}s")
        alive = [n for n in alive if n not in errors]
        print(f"  round {r + 1}/{repeats}: {', '.join(shown)}", flush=True)
    results = {}
    for name in alive:
        try:
            res = server.request('finish', name)['result']
        except MeasurementError as e:
            errors[name] = str(e)
            continue
        wall = sum(s['seconds'] for s in samples[name])
        others = sum(s['machine_cpu'] - s['own_cpu'] for s in samples[name]) / wall
        results[name] = dict(res, seconds=[s['seconds'] for s in samples[name]],
                             page_faults_per_step=statistics.median(s['page_faults'] for s in samples[name]),
                             other_cores=max(others, 0.0) if others == others else None)
    return results


def machine_busy_cores(interval: float = 1.0) -> float:
    """How many cores the machine keeps busy right now (the driver and an idle server use none)."""
    b0 = _cpu_snapshot()[0]
    time.sleep(interval)
    return (_cpu_snapshot()[0] - b0) / interval


def wait_for_idle(limit: float, threshold: float = 0.3):
    """Waits up to ``limit`` s for other processes to leave the cores alone; on a shared
    2-core machine one busy neighbour halves throughput and stalls every OpenMP barrier."""
    if limit <= 0:
        return
    deadline = time.perf_counter() + limit
    busy = machine_busy_cores()
    if busy < threshold:
        return
    print(f'  waiting up to {limit:.0f}s for the CPU to go idle (other processes use {busy:.1f} cores) ...',
          flush=True)
    while busy >= threshold and time.perf_counter() < deadline:
        busy = machine_busy_cores(2.0)
    if busy >= threshold:
        print(f'  still {busy:.1f} cores busy; measuring anyway', flush=True)


def available_memory_bytes() -> float:
    try:
        with open('/proc/meminfo') as f:
            for line in f:
                if line.startswith('MemAvailable:'):
                    return int(line.split()[1]) * 1024.0
    except OSError:
        pass
    return float('inf')


def summarise_rate(result: dict, batch: int) -> dict:
    ips = [batch / t for t in result['seconds']]
    return dict(result, ips=ips, ips_median=statistics.median(ips), ips_min=min(ips), ips_max=max(ips),
                seconds_median=statistics.median(result['seconds']))


def contention_note(r) -> str:
    others = r.get('other_cores') if r else None
    return f'  (!) other processes used {others:.1f} cores meanwhile' if others and others > CONTENDED else ''


def report(i: int, total: int, name: str, r: dict, took: float):
    print(f"[{i}/{total}] {name}: {r['ips_median']:.3f} images/s "
          f"(min {r['ips_min']:.3f}, max {r['ips_max']:.3f}; {r['seconds_median']:.3f} s/iter), "
          f"peak RSS +{r['rss_extra_mib']:.0f} MiB over {r['rss_base_mib']:.0f} MiB built, "
          f"{r['page_faults_per_step'] * 4 / 1024:.0f} MiB page-faulted per step "
          f"({took:.1f}s){contention_note(r)}", flush=True)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--arch', default='300m', help="InternViT preset ('300m', '6b', '6b-448') or 'tiny'")
    p.add_argument('--img-size', type=int, default=224)
    p.add_argument('--batch', type=int, default=4)
    p.add_argument('--repeats', type=int, default=5, help='timed iterations per measurement')
    p.add_argument('--warmup', type=int, default=1, help='untimed iterations before them')
    p.add_argument('--dtype', choices=('fp32', 'bf16'), default='fp32')
    p.add_argument('--threads', type=int, default=len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity')
                   else os.cpu_count())
    p.add_argument('--sequential', action='store_true',
                   help='one measurement at a time instead of compared ones in alternating rounds')
    p.add_argument('--wait-idle', type=float, default=0, metavar='SECONDS',
                   help='before each measurement, wait up to this long for other processes to stop using the CPU')
    p.add_argument('--allocator', choices=('keep', 'os'), default='keep',
                   help="'keep': freed memory stays in the process for reuse, as tools/train.py, test.py and "
                        "linear_probe.py run (internvit_dense.engine.workarounds.keep_freed_memory_on_cpu); 'os': "
                        "glibc's defaults, which return big freed blocks to the OS every step (default: keep)")
    p.add_argument('--quick', action='store_true', help=f'smoke test: {QUICK} (overrides those options)')
    p.add_argument('--json', help='where to write the results (default work_dirs/benchmark/<timestamp>.json)')
    p.add_argument('--_server', action='store_true', help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        for k, v in QUICK.items():
            setattr(args, k, v)
    if args.img_size % PATCH_SIZE:
        p.error(f'--img-size must be a multiple of the patch size {PATCH_SIZE}')
    if args.repeats < 1 or args.warmup < 0 or args.threads < 1:
        p.error('--repeats and --threads must be >= 1, --warmup >= 0')
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args._server:
        serve(args.allocator)
        return 0
    # A plain SIGTERM would skip the cleanup below and leave the server and its children running.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
    json_path = args.json or osp.join(ROOT, 'work_dirs', 'benchmark', f'{stamp}.json')
    print(f'InternViT benchmark: arch {args.arch}, {args.img_size}px, batch {args.batch}, {args.dtype}, '
          f'{args.threads} threads, {args.warmup} warm-up + {args.repeats} timed iterations per measurement',
          flush=True)
    if args.quick:
        print('--quick is a smoke test: a model this small times per-op overhead and thread wake-ups, '
              'not the backbone', flush=True)

    workdir = tempfile.mkdtemp(prefix='internvit-bench-')
    base = dict(arch=args.arch, img_size=args.img_size, batch=args.batch, dtype=args.dtype, threads=args.threads,
                warmup=args.warmup, repeats=args.repeats, workdir=workdir)
    results, errors = {}, {}
    server = None
    try:
        t0 = time.perf_counter()
        try:
            server = Server(args.threads, args.allocator, osp.join(workdir, 'server.log'))
            kept = ('freed memory kept for reuse (mallopt)' if server.freed_memory_kept else
                    "glibc's default (freed blocks returned to the OS)")
            print(f'[setup] torch, internvit_dense.models and transformers imported once: '
                  f'{server.import_seconds:.1f}s; allocator: {kept}', flush=True)
            prep = server.run_once('prep', dict(base, kind='prep'))
        except MeasurementError as e:
            print(f'[prep] FAILED: nothing to measure\n{e}', file=sys.stderr)
            return 1
        arch = prep['arch']
        base['arch'] = arch  # measurements build exactly what was saved
        print(f"[prep] {prep['params'] / 1e6:.1f}M params (embed {arch['embed_dims']}, depth {arch['depth']}, "
              f"heads {arch['num_heads']}, mlp {arch['mlp_dims']}, {arch['norm_type']}), saved in our and "
              f"transformers' layout; on one image max |ours - transformers| = {prep['max_abs_diff']:.2e} "
              f"({time.perf_counter() - t0:.1f}s)", flush=True)

        tokens = (args.img_size // PATCH_SIZE) ** 2 + 1
        gemm = (args.batch * tokens, arch['embed_dims'], arch['mlp_dims'])
        flops_img = forward_flops(arch, args.img_size)
        total = 6

        wait_for_idle(args.wait_idle)
        t0 = time.perf_counter()
        try:
            results['matmul'] = r = server.run_once('matmul', dict(base, kind='matmul', gemm=gemm))
            rates = ', '.join(f"{k}: {v['gflops_max']:.4g} max / {v['gflops_median']:.4g} median"
                              for k, v in r['layouts'].items())
            print(f'[1/{total}] torch.mm {gemm[0]}x{gemm[1]} @ {gemm[1]}x{gemm[2]} {args.dtype} GFLOP/s: {rates} '
                  f'({time.perf_counter() - t0:.1f}s){contention_note(r)}', flush=True)
        except MeasurementError as e:
            errors['matmul'] = str(e)
            print(f'[1/{total}] matmul: FAILED\n{e}', flush=True)

        groups = [
            [('forward/ours', dict(kind='forward', impl='ours')),
             ('forward/transformers', dict(kind='forward', impl='theirs')),
             ('train-frozen/ours', dict(kind='train', impl='ours', mode='frozen')),
             ('matmul/paired', dict(kind='matmul', gemm=gemm, paired=True))],
            [('train-full/ours', dict(kind='train', impl='ours', mode='full')),
             ('train-full/transformers', dict(kind='train', impl='theirs', mode='full'))],
        ]
        # Rough resident size of each: weights (+ gradients when training) + activations + process.
        bytes_per = prep['params'] * (4 if args.dtype == 'fp32' else 2)
        footprint = dict(forward=1.5 * bytes_per, frozen=1.5 * bytes_per, full=4 * bytes_per, matmul=0)
        done = 1
        for group in groups:
            need = sum(footprint[spec.get('mode', spec['kind'])] + 0.3e9 for _, spec in group)
            together = not args.sequential and need < 0.7 * available_memory_bytes()
            batches = [group] if together else [[m] for m in group]
            if together:
                print(f"  timing {', '.join(n for n, _ in group)} in alternating rounds", flush=True)
            for members in batches:
                wait_for_idle(args.wait_idle)
                t0 = time.perf_counter()
                got = measure_together(server, [(n, dict(base, **s)) for n, s in members], args.repeats, errors)
                took = time.perf_counter() - t0
                for name, _ in members:
                    if name == 'matmul/paired':
                        if name in got:
                            results[name] = got[name]
                            rates = [got[name]['flop_per_step'] / t / 1e9 for t in got[name]['seconds']]
                            print(f'  torch.mm stepped in the same rounds: {statistics.median(rates):.4g} GFLOP/s '
                                  f'median, {max(rates):.4g} max{contention_note(got[name])}', flush=True)
                        continue
                    done += 1
                    if name in got:
                        results[name] = summarise_rate(got[name], args.batch)
                        report(done, total, name, results[name], took)
                    else:
                        print(f'[{done}/{total}] {name}: FAILED', flush=True)
    finally:
        if server is not None:
            server.close()
        shutil.rmtree(workdir, ignore_errors=True)

    if not any(k != 'matmul' for k in results):
        print('every measurement failed', file=sys.stderr)
        return 1

    summary = summarise(flops_img, results, args.batch)
    print_summary(args, arch, prep, flops_img, gemm, results, summary)

    record = dict(
        timestamp=stamp, config=dict(vars(args), _server=None, arch_resolved=arch, patch_size=PATCH_SIZE),
        environment=dict(environment(), freed_memory_kept=server.freed_memory_kept), prep=prep,
        forward_gflop_per_image=flops_img / 1e9, gemm_shape=gemm,
        results=results, summary=summary, errors=errors)
    os.makedirs(osp.dirname(osp.abspath(json_path)), exist_ok=True)
    with open(json_path, 'w') as f:
        json.dump(record, f, indent=2)
    print(f'results written to {osp.abspath(json_path)}')
    return 1 if errors else 0


def summarise(flops_img: float, results: dict, batch: int) -> dict:
    def ips(name, key='ips_median'):
        r = results.get(name)
        return r[key] if r else None

    def ratio(a, b):
        return a / b if a and b else None

    peak = results.get('matmul', {}).get('peak_gflops')
    s = dict(
        forward_ratio=ratio(ips('forward/ours'), ips('forward/transformers')),
        train_full_ratio=ratio(ips('train-full/ours'), ips('train-full/transformers')),
        # time per frozen step / time per forward = forward rate / frozen-step rate
        frozen_cost=ratio(ips('forward/ours'), ips('train-frozen/ours')),
        matmul_peak_gflops=peak,
    )
    # Compared measurements ran back to back in every round: the median of the per-round ratios
    # cancels load that drifts over the run. Each is (numerator's time, denominator's time).
    for key, slow, fast in (('forward_ratio_paired', 'forward/transformers', 'forward/ours'),
                            ('train_full_ratio_paired', 'train-full/transformers', 'train-full/ours'),
                            ('frozen_cost_paired', 'train-frozen/ours', 'forward/ours')):
        ra, rb = results.get(slow), results.get(fast)
        if ra and rb and len(ra['seconds']) == len(rb['seconds']):
            s[key] = statistics.median(ta / tb for ta, tb in zip(ra['seconds'], rb['seconds']))
    for impl in ('ours', 'transformers'):
        for kind, key in (('', 'ips_median'), ('_best', 'ips_max')):
            rate = ips(f'forward/{impl}', key)
            g = rate * flops_img / 1e9 if rate else None
            s[f'forward_gflops{kind}_{impl}'] = g
            s[f'forward_peak_fraction{kind}_{impl}'] = g / peak if g and peak else None
    # The forward's share of the matmul rate measured in the same rounds, under the same load.
    mm, fwd = results.get('matmul/paired'), results.get('forward/ours')
    if mm and fwd and len(mm['seconds']) == len(fwd['seconds']):
        s['forward_peak_fraction_paired_ours'] = statistics.median(
            (batch * flops_img / tf) / (mm['flop_per_step'] / tm) for tf, tm in zip(fwd['seconds'], mm['seconds']))
    fraction = s.get('forward_peak_fraction_paired_ours') or s['forward_peak_fraction_ours']
    s['targets'] = [
        _target(f'forward images/s ours / transformers >= {TARGET_RATIO:.2f}', s['forward_ratio'],
                lambda v: v >= TARGET_RATIO, _x),
        _target(f'full train step images/s ours / transformers >= {TARGET_RATIO:.2f}', s['train_full_ratio'],
                lambda v: v >= TARGET_RATIO, _x),
        _target(f'our forward reaches >= {TARGET_PEAK_FRACTION:.0%} of the torch.mm rate'
                + (' (same rounds)' if s.get('forward_peak_fraction_paired_ours') else ''),
                fraction, lambda v: v >= TARGET_PEAK_FRACTION, _pct),
        _target(f'frozen train step <= {TARGET_FROZEN_COST:.2f}x a forward pass', s['frozen_cost'],
                lambda v: v <= TARGET_FROZEN_COST, _x),
    ]
    return s


def _target(name, value, test, fmt) -> dict:
    return dict(name=name, value=value, ok=None if value is None else bool(test(value)), shown=fmt(value))


def _x(v):
    return f'{v:.3f}x' if v is not None else 'n/a'


def _pct(v):
    return f'{v:.1%}' if v is not None else 'n/a'


def _rate_cell(r):
    return f"{r['ips_median']:8.3f} [{r['ips_min']:.3f}-{r['ips_max']:.3f}]" if r else 'failed'


def print_summary(args, arch, prep, flops_img, gemm, results, s):
    w = 116
    print('\n' + '=' * w)
    print(f"SUMMARY  InternViT {args.arch} (embed {arch['embed_dims']}, depth {arch['depth']}, heads "
          f"{arch['num_heads']}, mlp {arch['mlp_dims']}, {arch['norm_type']}), {prep['params'] / 1e6:.1f}M params, "
          f"{args.img_size}px, batch {args.batch}, {args.dtype}, {args.threads} threads")
    print('images/s: median [min-max] over the timed iterations; ours/tf: ratio of the medians; '
          'peak RSS: MiB above weights+input')
    print('-' * w)
    print(f"{'measurement':<26}| {'ours images/s':<30}| {'transformers images/s':<30}| {'ours/tf':<8}"
          f"| {'peak RSS ours/tf':<16}")
    print('-' * w)
    rows = [('forward (eval, no grad)', 'forward/ours', 'forward/transformers', s['forward_ratio']),
            ('train step, full', 'train-full/ours', 'train-full/transformers', s['train_full_ratio']),
            ('train step, frozen', 'train-frozen/ours', None, None)]
    for label, ours, theirs, ratio in rows:
        r_o, r_t = results.get(ours), results.get(theirs) if theirs else None
        tf_cell = _rate_cell(r_t) if theirs else '       - (not measured)'
        mem_o = f"{r_o['rss_extra_mib']:.0f}" if r_o else '-'
        mem_t = f"{r_t['rss_extra_mib']:.0f}" if r_t else '-'
        print(f"{label:<26}| {_rate_cell(r_o):<30}| {tf_cell:<30}| {_x(ratio):<8}| {mem_o} / {mem_t}")
    print('-' * w)
    peak = s['matmul_peak_gflops']
    if peak:
        print(f"torch.mm peak at the fc1 GEMM {gemm[0]}x{gemm[1]} @ {gemm[1]}x{gemm[2]} ({args.dtype}): "
              f"{peak:.4g} GFLOP/s ({results['matmul']['peak_layout']})")
    print(f'forward FLOPs (analytic, 2 per multiply-add): {flops_img / 1e9:.4g} GFLOP per image')
    for impl in ('ours', 'transformers'):
        g, best = s[f'forward_gflops_{impl}'], s[f'forward_gflops_best_{impl}']
        if g:
            print(f"forward {impl:<13} {g:8.4g} GFLOP/s = {_pct(s[f'forward_peak_fraction_{impl}'])} of the "
                  f"torch.mm peak (best iteration {best:.4g} GFLOP/s = "
                  f"{_pct(s[f'forward_peak_fraction_best_{impl}'])})")
    if any((s[f'forward_peak_fraction_best_{impl}'] or 0) > 1 for impl in ('ours', 'transformers')):
        print('(a forward iteration beat the torch.mm peak: the peak samples all met load from other processes; '
              'the same-rounds figure below compares like with like)')
    if s.get('forward_peak_fraction_paired_ours'):
        print(f"forward ours vs torch.mm stepped in the same rounds (same load): "
              f"{_pct(s['forward_peak_fraction_paired_ours'])} (median of per-round ratios)")
    if s['frozen_cost']:
        print(f"frozen train step costs {s['frozen_cost']:.3f}x a forward pass (ours)")
    paired = [(k, s.get(k)) for k in ('forward_ratio_paired', 'train_full_ratio_paired', 'frozen_cost_paired')]
    if any(v for _, v in paired):
        print('median of per-round ratios (same rounds, same load): '
              + ', '.join(f'{k[:-len("_paired")]} {_x(v)}' for k, v in paired if v))
    print('-' * w)
    print('targets:')
    for t in s['targets']:
        verdict = 'n/a' if t['ok'] is None else 'PASS' if t['ok'] else 'SHORT'
        print(f"  [{verdict:<5}] {t['name']:<62} measured {t['shown']}")
    noisy = {n: r['other_cores'] for n, r in results.items() if (r.get('other_cores') or 0) > CONTENDED}
    if noisy:
        print('note: other processes used CPU during ' + ', '.join(f'{n} ({c:.1f} cores)' for n, c in noisy.items())
              + ': absolute rates and % of peak are pessimistic there')
    print('=' * w)


def environment() -> dict:
    env = dict(python=platform.python_version(), machine=platform.machine(), cpus=os.cpu_count())
    try:
        with open('/proc/cpuinfo') as f:
            env['cpu'] = next((line.split(':', 1)[1].strip() for line in f if line.startswith('model name')), None)
    except OSError:
        pass
    # Versions from package metadata: the driver does not import torch itself.
    from importlib import metadata
    for pkg in ('torch', 'transformers', 'timm', 'mmengine'):
        try:
            env[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            env[pkg] = None
    return env


if __name__ == '__main__':
    sys.exit(main())
