"""Several encoders' linear-probe results in one table and one bar plot (``linear_probe.py compare``).

Each input is what ``eval`` wrote: a cache folder (its ``sweep/eval.json``), a sweep or
output folder holding ``eval.json``, or the file itself. The paper's rows (the InternVL
paper's linear-probe table, same protocol, full ImageNet) are printed below for
reference; they are not measured here.
"""
from __future__ import annotations

import json
import math
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence

from internvit_dense.datasets.imagenet import VARIANTS

from .evaluate import ORDER

EVAL_JSON = 'eval.json'
# InternVL (CVPR 2024), linear-probe table: IN-1K, ReaL, V2, A, R, Sketch top-1 (None: not reported).
PAPER_ROWS: Dict[str, Dict[str, Optional[float]]] = {
    'ViT-22B (paper, JFT-3B)': dict(in1k=89.5, real=90.9, v2=83.2, a=83.8, r=87.4, sketch=None),
    'OpenCLIP-G (paper)': dict(in1k=86.2, real=89.4, v2=77.2, a=63.8, r=87.8, sketch=66.4),
    'DINOv2-g (paper)': dict(in1k=86.5, real=89.6, v2=78.4, a=75.9, r=78.8, sketch=62.5),
    'EVA-01-CLIP-g (paper)': dict(in1k=86.5, real=89.3, v2=77.4, a=70.5, r=87.7, sketch=63.1),
    'MAWS-ViT-6.5B (paper)': dict(in1k=87.8, real=None, v2=None, a=None, r=None, sketch=None),
    'InternViT-6B (paper)': {name: v.paper_6b for name, v in VARIANTS.items()},
}


def find_eval_json(path: str) -> str:
    """``path`` itself, ``path/eval.json`` or ``path/sweep/eval.json``."""
    for candidate in (path, osp.join(path, EVAL_JSON), osp.join(path, 'sweep', EVAL_JSON)):
        if osp.isfile(candidate):
            return candidate
    raise FileNotFoundError(f'{path}: no {EVAL_JSON} (looked in it and in its sweep/ folder); '
                            'run `linear_probe.py eval --cache CACHE` first')


def describe_identity(identity: dict, folder: Optional[str] = None) -> str:
    """A short name of the encoder a cache was extracted from (``folder``: the weights folder's name, which the
    location-independent identity does not keep)."""
    enc = identity.get('encoder')
    if enc is None:  # InternViT caches carry no 'encoder' entry
        arch = identity.get('arch') or {}
        label = f"InternViT {arch.get('embed_dims', '?')}d x {arch.get('depth', '?')}"
    elif enc.get('kind') == 'timm':
        label = f"timm:{enc['name']}"
    else:
        label = f"hf:{enc.get('model_type', '?')}"
    ckpt = identity.get('checkpoint') or {}
    if ckpt.get('kind') == 'dir' and folder:
        label += f' ({folder})'
    elif ckpt.get('kind') == 'file':
        label += f" ({ckpt['files'][0][0]})"
    elif ckpt.get('kind') == 'random':
        label += ' (random init)'
    return label


def load_result(path: str, name: Optional[str] = None) -> dict:
    """One encoder's row: {name, top1: {variant: %}, optimistic, source}."""
    json_path = find_eval_json(path)
    with open(json_path) as f:
        data = json.load(f)
    if not name:
        name = data.get('encoder') or osp.basename(osp.normpath(data.get('cache') or osp.dirname(json_path)))
    top1 = {r['variant']: r['top1'] for r in data['results']}
    return dict(name=name, top1=top1, optimistic=bool(data.get('optimistic')), source=json_path,
                feature=data.get('feature'), images={r['variant']: r['images'] for r in data['results']})


def compare(paths: Sequence[str], names: Optional[Sequence[str]] = None) -> List[dict]:
    if names and len(names) != len(paths):
        raise ValueError(f'{len(names)} names for {len(paths)} results')
    return [load_result(p, names[i] if names else None) for i, p in enumerate(paths)]


def _cell(v) -> str:
    return '-' if v is None or (isinstance(v, float) and math.isnan(v)) else f'{v:.1f}'


def format_compare_table(rows: List[dict], paper: bool = True) -> str:
    variants = [v for v in ORDER if any(v in r['top1'] for r in rows)] or list(ORDER)
    width = max([len(r['name']) + 2 for r in rows] + ([len(n) for n in PAPER_ROWS] if paper else []) + [12]) + 1
    head = f"{'encoder':<{width}}" + ''.join(f'{_short(v):>9}' for v in variants) + f"{'mean':>8}"
    lines = [head, '-' * len(head)]
    for r in rows:
        vals = [r['top1'].get(v) for v in variants]
        known = [v for v in vals if v is not None and not (isinstance(v, float) and math.isnan(v))]
        mark = ' *' if r['optimistic'] else ''
        lines.append(f"{r['name'] + mark:<{width}}" + ''.join(f'{_cell(v):>9}' for v in vals)
                     + f"{_cell(sum(known) / len(known)) if known else '-':>8}")
    if any(r['optimistic'] for r in rows):
        lines.append('* selected on IN-1k val: optimistic (the reported number chose the probe)')
    if paper:
        lines.append('')
        lines.append('InternVL paper, same protocol on full ImageNet (reference, not measured here):')
        for name, vals in PAPER_ROWS.items():
            lines.append(f'{name:<{width}}' + ''.join(f'{_cell(vals.get(v)):>9}' for v in variants))
    return '\n'.join(lines)


def _short(variant: str) -> str:
    return dict(in1k='IN-1K', real='ReaL', v2='V2', a='A', r='R', sketch='Sketch')[variant]


def plot_compare(rows: List[dict], path: str) -> str:
    """Grouped bars: one group per evaluation set, one bar per encoder (top-1 %)."""
    import matplotlib
    matplotlib.use('Agg')  # files only; no display on a training node
    import matplotlib.pyplot as plt
    import numpy as np

    variants = [v for v in ORDER if any(v in r['top1'] for r in rows)]
    x = np.arange(len(variants))
    width = 0.8 / max(len(rows), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(variants) + 2), 3.6), dpi=110)
    for i, r in enumerate(rows):
        vals = [r['top1'].get(v) for v in variants]
        vals = [np.nan if v is None else v for v in vals]
        bars = ax.bar(x - 0.4 + width * (i + 0.5), vals, width, label=r['name'] + (' *' if r['optimistic'] else ''),
                      color=f'C{i}')
        ax.bar_label(bars, fmt='%.1f', fontsize=6, padding=1)
    ax.set_xticks(x, [_short(v) for v in variants])
    ax.set_ylabel('linear-probe top-1 (%)')
    ax.grid(axis='y', alpha=0.3)
    ax.legend(fontsize=7, loc='upper left', bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    tmp = path + '.tmp.png'
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return path
