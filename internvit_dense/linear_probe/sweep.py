"""The sweep: train the grid once over the cached training features, pick the best on held-out data.

Selection is on a stratified held-out part of the training split by default, so the
reported validation number was not used to choose (``select_on='val'`` selects on
ImageNet-1k val instead, as DINOv2's evaluation does; its numbers are then optimistic and
labelled so). The chosen classifier is the one trained in the sweep (on the training split
minus the held-out part), not a retrained one. With augmented training views, held-out
images are scored on their first view.

Defaults that hold at any data size (:func:`plan_schedule`): on ImageNet the recipe's
schedule (batch 1024, 10 epochs, 1 warm-up epoch: 12,500 steps); on a small set the
batch shrinks to the data and the epochs grow until the probes get ``min_steps``
optimizer steps, as DINOv2's linear evaluation trains a fixed number of iterations
whatever the data size. The held-out part keeps ``holdout_min_per_class`` images of
every class however small the fraction.
"""
from __future__ import annotations

import math
import os
import os.path as osp
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from .cache import FeatureCache, _write_json_atomic
from .grid import (DEFAULT_LRS, LinearGrid, ProbeClassifier, evaluate_grid, make_specs, stratified_holdout,
                   train_grid)

TRAIN_SPLIT, VAL_SPLIT = 'train', 'in1k'
SWEEP_JSON, BEST_FILE = 'sweep.json', 'best_classifier.pth'
MIN_STEPS = 1000  # optimizer steps the default schedule never goes below
FEW_STEPS = 300  # below this a probe has rarely converged: warn
MIN_BATCH = 16
STEPS_PER_EPOCH_SMALL = 8  # on small sets the batch shrinks to 1/8 of the data (at least MIN_BATCH)
HOLDOUT_MIN_PER_CLASS = 10
OPTIMISTIC = 'selected on IN-1k val: optimistic'


@dataclass
class Schedule:
    batch: int
    steps_per_epoch: int
    epochs: float
    steps: int
    warmup: int

    def describe(self) -> str:
        return (f'{self.steps} optimizer steps (batch {self.batch}, {self.steps_per_epoch} steps per epoch, '
                f'{self.epochs:g} epochs), warm-up {self.warmup} steps')


def plan_schedule(num_images: int, batch_size: int = 1024, epochs: float = 10, warmup_epochs: float = 1.0,
                  min_steps: int = MIN_STEPS, steps: Optional[int] = None) -> Schedule:
    """The sweep's schedule for ``num_images`` training images; see the module docstring.

    ``steps`` sets the number of optimizer steps outright (the batch still shrinks to small data).
    The warm-up is the same fraction of the schedule as ``warmup_epochs`` of ``epochs``.
    """
    if num_images < 1:
        raise ValueError('no training images')
    batch = min(batch_size, max(MIN_BATCH, num_images // STEPS_PER_EPOCH_SMALL), num_images)
    per_epoch = num_images // batch
    total = steps if steps else max(int(math.ceil(epochs * per_epoch)), min_steps)
    warmup = int(round(total * warmup_epochs / epochs)) if epochs else 0
    return Schedule(batch, per_epoch, round(total / per_epoch, 2), int(total), warmup)


def run_sweep(cache: FeatureCache, out_dir: str, lrs: Sequence[float] = DEFAULT_LRS,
              n_lasts: Sequence[int] = (1, 4), avgpool: Sequence[bool] = (False, True), epochs: float = 10,
              warmup_epochs: float = 1.0, batch_size: int = 1024, holdout: float = 0.02,
              holdout_min_per_class: int = HOLDOUT_MIN_PER_CLASS, select_on: str = 'holdout',
              min_steps: int = MIN_STEPS, steps: Optional[int] = None, momentum: float = 0.9, seed: int = 0,
              device: str = 'cpu', precision: str = 'fp32', progress: bool = True, log=print) -> dict:
    """Trains ``len(lrs) x len(n_lasts) x len(avgpool)`` probes in one pass; writes ``sweep.json``
    and ``best_classifier.pth`` into ``out_dir`` and returns the summary."""
    if select_on not in ('holdout', 'val'):
        raise ValueError(f"select_on must be 'holdout' or 'val', got {select_on!r}")
    usable = sorted({min(n, len(cache.blocks)) for n in n_lasts})
    if usable != sorted(set(n_lasts)):
        log(f'sweep: the cache holds {len(cache.blocks)} blocks {cache.blocks}: last {list(n_lasts)} blocks '
            f'become last {usable}')
    specs = make_specs(usable, avgpool)
    start = time.time()
    train = cache.load(TRAIN_SPLIT)
    classes = train.meta.get('classes') or sorted(set(train.labels.tolist()))
    has_val = cache.is_complete(VAL_SPLIT)
    if select_on == 'val':
        if not has_val:
            raise ValueError(f"select_on='val' needs the {VAL_SPLIT!r} split in the cache")
        fit, held = np.arange(train.num_images), np.array([], dtype=np.int64)
    else:
        fit, held = stratified_holdout(train.labels, holdout, seed, holdout_min_per_class)
        if not len(held):
            raise ValueError(f'holdout={holdout} leaves no held-out image; use a larger fraction or select_on=val')
    schedule = plan_schedule(len(fit), batch_size, epochs, warmup_epochs, min_steps, steps)

    dev = torch.device(device)
    grid = LinearGrid(specs, lrs, cache.blocks, train.arrays[('cls', cache.blocks[-1])].shape[1], len(classes),
                      seed=seed, precision=precision).to(dev)
    log(f'sweep: {grid.num_classifiers} classifiers ({len(specs)} features x {len(lrs)} learning rates) on '
        f'{len(fit)} training images ({train.views} view(s) each), {precision} GEMMs on {dev}')
    log(f'  schedule: {schedule.describe()}')
    if len(held):
        per_class = np.bincount(train.labels[held])
        per_class = per_class[per_class > 0]
        log(f'  selection: on {len(held)} held-out training images ({per_class.min()}-{per_class.max()} per class, '
            f'{len(per_class)} classes)')
    else:
        log(f'  selection: on IN-1k val ({OPTIMISTIC}: the reported val number chose the probe)')
    if schedule.steps < FEW_STEPS:
        msg = (f'only {schedule.steps} optimizer steps: probes rarely converge in fewer than {FEW_STEPS}; '
               'raise --steps / --min-steps or --epochs')
        warnings.warn(msg)
        log(f'  WARNING: {msg}')
    losses = train_grid(grid, train, fit, schedule.steps, schedule.warmup, schedule.batch, momentum, seed=seed,
                        progress=progress)
    train_seconds = time.time() - start

    acc = {}
    if len(held):
        acc['holdout'] = evaluate_grid(grid, train, held)
    if has_val:
        val = cache.load(VAL_SPLIT)
        acc['val'] = evaluate_grid(grid, val)
    chosen = acc['holdout' if select_on == 'holdout' else 'val']
    s_best, l_best = np.unravel_index(int(np.argmax(chosen)), chosen.shape)

    results = []
    for s, spec in enumerate(specs):
        for j, lr in enumerate(lrs):
            results.append(dict(feature=spec.name, lr=lr, lr_scaled=lr * schedule.batch / 512,
                                **{name: float(a[s, j]) for name, a in acc.items()}))
    best = dict(results[s_best * len(lrs) + l_best])
    summary = dict(cache=cache.root, cache_key=cache.manifest['key'], blocks=cache.blocks, classes=list(classes),
                   select_on=select_on, optimistic=select_on == 'val',
                   holdout_fraction=holdout if select_on == 'holdout' else 0.0,
                   holdout_min_per_class=holdout_min_per_class if select_on == 'holdout' else 0,
                   num_fit=int(len(fit)), num_holdout=int(len(held)), schedule=asdict(schedule),
                   epochs=schedule.epochs, warmup_steps=schedule.warmup, steps=schedule.steps,
                   batch_size=schedule.batch, momentum=momentum, seed=seed, precision=precision, losses=losses,
                   train_seconds=round(train_seconds, 2), num_classifiers=grid.num_classifiers,
                   results=results, best=best)

    os.makedirs(out_dir, exist_ok=True)
    clf = grid.classifier(int(s_best), int(l_best))
    torch.save(dict(classifier=clf.state(), cache_key=cache.manifest['key'], classes=list(classes),
                    blocks=cache.blocks, selected=best, select_on=select_on), osp.join(out_dir, BEST_FILE))
    _write_json_atomic(osp.join(out_dir, SWEEP_JSON), summary)
    return summary


def load_best(sweep_dir: str) -> tuple:
    """(classifier, its saved record) from a sweep directory."""
    path = osp.join(sweep_dir, BEST_FILE)
    if not osp.isfile(path):
        raise FileNotFoundError(f'no {BEST_FILE} in {sweep_dir}: run `linear_probe.py sweep` first')
    record = torch.load(path, map_location='cpu', weights_only=False)
    return ProbeClassifier.from_state(record['classifier']), record


def format_sweep_table(summary: dict, best_only_mark: str = '*') -> str:
    metrics = [m for m in ('holdout', 'val') if m in summary['results'][0]]
    lines = [f"{'feature':<16}{'lr/512':>9}{'lr':>9}" + ''.join(f'{m + " top-1":>15}' for m in metrics)
             + (f'  ({OPTIMISTIC})' if summary.get('select_on') == 'val' else '')]
    best = summary['best']
    for r in summary['results']:
        mark = best_only_mark if (r['feature'], r['lr']) == (best['feature'], best['lr']) else ''
        lines.append(f"{r['feature']:<16}{r['lr']:>9.4g}{r['lr_scaled']:>9.4g}"
                     + ''.join(f'{r[m]:>15.2f}' for m in metrics) + f' {mark}')
    return '\n'.join(lines)


def lr_curve(summary: dict, metric: str) -> dict:
    """{feature: ([lr...], [accuracy...])} for plotting."""
    curves: dict = {}
    for r in summary['results']:
        if metric in r:
            xs, ys = curves.setdefault(r['feature'], ([], []))
            xs.append(r['lr'])
            ys.append(r[metric])
    return curves


def resolve_precision(precision: Optional[str], device: str) -> str:
    """bf16 GEMMs on a GPU (the recipe trains with AMP), float32 on a CPU unless asked: bf16 is only
    fast on CPUs with AMX / AVX512-BF16, and slower than float32 elsewhere."""
    if precision:
        return precision
    return 'bf16' if device.startswith('cuda') else 'fp32'


def resolve_device(device: Optional[str]) -> str:
    if device:
        return device
    return 'cuda' if torch.cuda.is_available() else 'cpu'
