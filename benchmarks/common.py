"""What the benchmarks share: timing in alternating rounds, memory readings, tables, the record they write.

Candidates that are compared with each other are timed in alternating rounds in one process, so that
load from other processes hits them alike and the per-round ratios stay meaningful on a shared machine.
Acceptance targets are in docs/benchmarks.md; the scripts print what they measured.
"""
from __future__ import annotations

import datetime
import json
import os
import os.path as osp
import platform
import statistics
import sys
from typing import Callable, Dict, List, Sequence

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)  # run from a checkout without install


# ------------------------------------------------------------------ time
def add_timing_arguments(parser, rounds: int, repeats: int):
    """--rounds, --repeats (see :func:`time_rounds`), --threads and --json, as the timing benchmarks take them."""
    import argparse

    import torch

    def at_least_one(text):
        if int(text) < 1:
            raise argparse.ArgumentTypeError(f'must be at least 1, got {text}')
        return int(text)

    parser.add_argument('--rounds', type=at_least_one, default=rounds,
                        help='timed rounds (every candidate called in each)')
    parser.add_argument('--repeats', type=at_least_one, default=repeats,
                        help='timed calls of every candidate per round, the fastest kept (3 on a shared VM); '
                             'each follows 2 untimed warm-up calls of the same candidate')
    parser.add_argument('--threads', type=int, default=torch.get_num_threads())
    parser.add_argument('--json', help='where to write the record (default work_dirs/benchmark/)')


PATCH = 14  # InternViT's patch size: the backbone benchmarks' images are whole patches


def add_image_arguments(parser, dtype: str, quick: dict):
    """--img-size, --batch, --dtype and --quick (which sets ``quick``'s values), as the backbone benchmarks take
    them; :func:`parse_image_arguments` applies --quick and checks the size."""
    parser.add_argument('--img-size', type=int, default=224)
    parser.add_argument('--batch', type=int, default=4)
    parser.add_argument('--dtype', choices=('fp32', 'bf16'), default=dtype)
    parser.add_argument('--quick', action='store_true', help=f'smoke test: {quick}')


def parse_image_arguments(parser, argv, quick: dict):
    args = parser.parse_args(argv)
    if args.quick:
        vars(args).update(quick)
    if args.img_size % PATCH:
        parser.error(f'--img-size must be a multiple of the patch size {PATCH}')
    return args


def time_rounds(candidates: Dict[str, Callable[[], object]], rounds: int, warmup: int = 1,
                progress: bool = True, repeats: int = 1) -> Dict[str, List[float]]:
    """Seconds per call of each candidate, one call each per round, the candidates in turn.

    Odd rounds run the candidates in reverse order, so that no candidate always runs right after the
    same other one (a cache or allocator state one call leaves would otherwise favour one side).
    ``repeats`` > 1: every candidate is called that many times per round (the candidates interleaved, the
    order reversed every other pass) and the round keeps each one's fastest call, timeit's estimator: on a
    machine whose neighbours take its cores for seconds at a time (a shared VM), a slow call measures them.

    ``torch.utils.benchmark.Timer`` times each call (it synchronises CUDA and keeps torch's thread
    count); the rounds are ours, since the Timer measures one statement at a time. Its ``timeit(1)`` first
    makes two untimed calls of the same statement, so every timed call runs warm, right after its own
    candidate's calls, as a step of a training loop does: a round makes 3 x ``repeats`` calls of each.
    """
    import torch
    from torch.utils.benchmark import Timer
    timers = {name: Timer('fn()', globals={'fn': fn}, num_threads=torch.get_num_threads())
              for name, fn in candidates.items()}
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    seconds = {name: [] for name in candidates}
    for r in range(rounds):
        fastest = {}
        for k in range(repeats):
            names = list(timers) if (r + k) % 2 == 0 else list(reversed(timers))
            for name in names:
                fastest[name] = min(fastest.get(name, float('inf')), timers[name].timeit(1).median)
        for name in timers:
            seconds[name].append(fastest[name])
        if progress:
            print(f'  round {r + 1}/{rounds}: ' + ', '.join(f'{n} {s[-1]:.3f}s' for n, s in seconds.items()),
                  flush=True)
    return seconds


def median_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> float:
    """Median of the per-round ratios: load that drifts over the run cancels within a round."""
    return statistics.median(a / b for a, b in zip(numerator, denominator))


# ---------------------------------------------------------------- memory
def _status_kib(field: str) -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise KeyError(field)


def rss_mib() -> float:
    return _status_kib('VmRSS') / 1024


def peak_rss_mib() -> float:
    """The process's resident high-water mark (since start, or since :func:`reset_peak_rss`)."""
    return _status_kib('VmHWM') / 1024


def reset_peak_rss() -> bool:
    """Resets VmHWM to the current RSS (Linux: writing 5 to clear_refs)."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


def extra_peak_mib(step: Callable[[], object]) -> float:
    """MiB that one call of ``step`` needs above what torch's CPU allocator held before it (activations,
    gradients), from the profiler's memory events: exact, and blind to other processes and to memory the
    process keeps for reuse. (Not a forked copy measured by RSS: forking after OpenMP has run hangs.)"""
    from torch.profiler import ProfilerActivity, profile

    from internvit_dense.memory_plan.validate import cpu_memory_events
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    try:
        memory, _ = cpu_memory_events(prof)
    except RuntimeError:  # the call allocated nothing
        return 0.0
    start = memory[0]['args']['Total Allocated'] - memory[0]['args']['Bytes']
    return (max(e['args']['Total Allocated'] for e in memory) - start) / 2 ** 20


# ---------------------------------------------------------------- report
def print_table(header: Sequence[str], rows: Sequence[Sequence[object]]):
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = '-+-'.join('-' * w for w in widths)
    for i, row in enumerate(cells):
        print(' | '.join(c.ljust(w) for c, w in zip(row, widths)))
        if i == 0:
            print(line)


def environment() -> dict:
    import torch
    env = dict(python=platform.python_version(), machine=platform.machine(), cpus=os.cpu_count(),
               torch=torch.__version__, threads=torch.get_num_threads())
    try:
        with open('/proc/cpuinfo') as f:
            env['cpu'] = next((line.split(':', 1)[1].strip() for line in f if line.startswith('model name')), None)
    except OSError:
        pass
    return env


def write_record(record: dict, path: str = None, name: str = 'benchmark') -> str:
    """Writes the run's record as JSON (atomically) to ``path`` or work_dirs/benchmark/<name>-<time>.json."""
    stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
    path = path or osp.join(ROOT, 'work_dirs', 'benchmark', f'{name}-{stamp}.json')
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    tmp = f'{path}.tmp{os.getpid()}'
    with open(tmp, 'w') as f:
        json.dump(dict(record, timestamp=stamp, environment=environment()), f, indent=2, default=str)
    os.replace(tmp, path)
    return path
