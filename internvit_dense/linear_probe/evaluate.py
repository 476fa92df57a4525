"""Scoring one probe on every variant in the cache: the table, its JSON, the accuracy-vs-lr plot."""
from __future__ import annotations

import math
import os
import os.path as osp
from typing import List, Optional

import torch

from . import scoring
from .cache import FeatureCache, _write_json_atomic
from .grid import ProbeClassifier, classifier_logits
from .sweep import lr_curve
from internvit_dense.datasets.imagenet import CACHE_SPLIT, VARIANTS

ORDER = ('in1k', 'real', 'v2', 'a', 'r', 'sketch')


def available_variants(cache: FeatureCache) -> List[str]:
    """Variants whose features are complete; ReaL rides on the val split when it carries ReaL labels."""
    names = []
    for name in ORDER:
        split = CACHE_SPLIT[name]
        if not cache.is_complete(split):
            continue
        if name == 'real' and not cache.load(split, keys=[]).meta.get('real_labels'):
            continue
        names.append(name)
    return names


def evaluate_variants(cache: FeatureCache, clf: ProbeClassifier, variants: Optional[List[str]] = None,
                      device: str = 'cpu') -> List[dict]:
    rows = []
    logits_of = {}
    for name in variants or available_variants(cache):
        spec = VARIANTS[name]
        split = CACHE_SPLIT[name]
        source = cache.load(split, keys=clf.keys)
        if split not in logits_of:
            logits_of[split] = classifier_logits(clf, source, device=torch.device(device))
        logits, labels = logits_of[split]
        subset = source.meta.get('class_subset') if spec.rule == 'subset' else None
        real = source.meta.get('real_labels') if spec.rule == 'real' else None
        top1 = scoring.score(logits, spec.rule, labels, subset, real, k=1)
        top5 = scoring.score(logits, spec.rule, labels, subset, real, k=5)
        rows.append(dict(variant=name, title=spec.title, rule=spec.rule, images=source.num_images,
                         scored=top1.total, skipped=top1.skipped,
                         classes=len(subset) if subset else logits.shape[1],
                         top1=top1.accuracy, top5=top5.accuracy, paper_6b=spec.paper_6b))
    return rows


def format_table(rows: List[dict]) -> str:
    head = f"{'variant':<17}{'images':>8}{'scored':>8}{'classes':>9}{'top-1':>8}{'top-5':>8}{'paper 6B':>10}"
    lines = [head, '-' * len(head)]
    for r in rows:
        paper = f"{r['paper_6b']:.1f}" if r['paper_6b'] is not None else '-'
        lines.append(f"{r['title']:<17}{r['images']:>8}{r['scored']:>8}{r['classes']:>9}"
                     f"{_pct(r['top1']):>8}{_pct(r['top5']):>8}{paper:>10}")
    return '\n'.join(lines)


def _pct(v: float) -> str:
    return '-' if v is None or math.isnan(v) else f'{v:.2f}'


def write_json(path: str, rows: List[dict], extra: dict) -> None:
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    clean = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in rows]
    _write_json_atomic(path, dict(extra, results=clean))


def plot_lr_curves(summary: dict, path: str) -> str:
    """Accuracy vs learning rate, one line per feature (held-out solid, val dashed), best marked."""
    import matplotlib
    matplotlib.use('Agg')  # files only; no display on a training node
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.0, 3.6), dpi=110)
    for metric, style in (('holdout', '-'), ('val', '--')):
        for i, (feature, (xs, ys)) in enumerate(sorted(lr_curve(summary, metric).items())):
            ax.plot(xs, ys, style, marker='o', ms=3, color=f'C{i}', label=f'{feature} ({metric})')
    best = summary['best']
    metric = 'holdout' if 'holdout' in best else 'val'
    ax.plot([best['lr']], [best[metric]], marker='*', ms=14, color='k', ls='none', label='chosen')
    ax.set_xscale('log')
    ax.set_xlabel('learning rate per 512 images')
    ax.set_ylabel('top-1 accuracy (%)')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc='upper left', bbox_to_anchor=(1.01, 1.0))  # beside the axes, off the curves
    fig.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
