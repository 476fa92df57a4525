"""The plan against a real training step on this CPU, and against DeepSpeed's own estimators.

A real step (forward, loss, backward of the config's model with random weights) is measured by the
CPU allocator itself, through the profiler's memory events (``Total Allocated`` after every
allocation and release): an instrument independent of the plan's (fake tensors whose storages
it follows). Both run the same step function, so they differ only in how memory is counted.
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Optional, Tuple

import torch

from .plan import _step_function, _Tracer, build_model, training_input_size
from .states import runner_of


def cpu_memory_events(prof) -> Tuple[list, list]:
    """(CPU allocator events in time order, all trace events) of a ``profile(profile_memory=True)`` run; each
    memory event's ``args['Total Allocated']`` is what torch's CPU allocator held just after it."""
    with tempfile.TemporaryDirectory(prefix='memplan-') as tmp:
        path = os.path.join(tmp, 'trace.json')
        prof.export_chrome_trace(path)
        with open(path) as f:
            events = json.load(f)['traceEvents']
    memory = sorted((e for e in events if e.get('name') == '[memory]' and e['args'].get('Device Type', 0) == 0),
                    key=lambda e: e['ts'])
    if not memory:
        raise RuntimeError('the profiler recorded no CPU memory events')
    return memory, events


def measured_cpu_step(cfg, batch: int, size: Optional[Tuple[int, int]] = None) -> dict:
    """Bytes the CPU allocator held above the step's start: after the forward (kept for backward) and at
    the peak of forward + backward."""
    from torch.profiler import ProfilerActivity, profile, record_function
    size = size or training_input_size(cfg)
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    run = _step_function(model, batch, size, torch.float32, cfg)
    runner = runner_of(cfg, 1)
    amp = torch.autocast('cpu', dtype=runner.autocast) if runner.autocast else torch.autocast('cpu', enabled=False)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        with amp:
            loss = run()
        with record_function('memory_plan::backward'):
            loss.backward()
    del loss
    memory, events = cpu_memory_events(prof)
    backward_start = min(e['ts'] for e in events if e.get('name') == 'memory_plan::backward')
    start = memory[0]['args']['Total Allocated'] - memory[0]['args']['Bytes']
    before_backward = [e['args']['Total Allocated'] for e in memory if e['ts'] < backward_start]
    return dict(kept_for_backward=(before_backward[-1] if before_backward else start) - start,
                peak=max(e['args']['Total Allocated'] for e in memory) - start)


def planned_cpu_step(cfg, batch: int, size: Optional[Tuple[int, int]] = None) -> dict:
    """The plan's figures for the same step as :func:`measured_cpu_step` (fp32 or the config's autocast,
    mmcv's CPU path of deformable attention)."""
    size = size or training_input_size(cfg)
    runner = runner_of(cfg, 1)
    step = _Tracer(cfg, 'cpu').step(cfg, runner, batch, size)
    return dict(kept_for_backward=step.kept_for_backward, peak=step.peak, autograd_saved=step.autograd_saved)
