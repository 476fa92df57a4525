"""A small synthetic classification set in the on-disk layouts of ImageNet-1k and its variants.

It exists so that the linear-probe benchmark (feature cache, sweep, every scoring
rule) and the classification config run end to end on a CPU in a minute, on a task
that is learnable and whose variants are harder in the ways the real ones are::

    <root>/imagenet-1k/train/<wnid>/<wnid>_<k>.JPEG
    <root>/imagenet-1k/val/<wnid>/ILSVRC2012_val_<n>.JPEG   (or flat val/ with val_layout='flat')
    <root>/imagenet-1k/meta/{train,val}.txt                  "<path> <class index>" lines
    <root>/imagenet-1k/real.json                             ReaL label sets, in val-number order
    <root>/imagenetv2/imagenetv2-matched-frequency-format-val/<class index>/<hash>.jpeg
    <root>/imagenet-sketch/sketch/<wnid>/sketch_<k>.JPEG
    <root>/imagenet-a/<wnid>/<k>.jpg                         a subset of the classes
    <root>/imagenet-r/<wnid>/<style>_<k>.jpg                 another subset
    <root>/.synthetic_imagenet  (written first; marks the folder as ours)
    <root>/.complete            (written last; JSON summary)

The wnids are the first ``num_classes`` of the real ImageNet-1k (sorted), so class
``i`` here is class ``i`` there; the pictures have nothing to do with those classes.
A class is a hue and a texture (solid or striped) of one object on a cluttered grey
background. The variants shift the distribution:

* V2: new draws, objects somewhat smaller and noisier (a new test set of the same task);
* Sketch: grey pencil drawings: outline and hatching, no colour;
* A: small objects among distractors of other classes' colours, heavy noise;
* R: renditions: flat posterised colours, thick outlines, coloured backgrounds.

ReaL: most val images keep their label; some show a second object of another class
(label set of two), some show no object (empty set: not scored), and some were filed
under the wrong class (the ReaL set holds the class actually shown).
"""
from __future__ import annotations

import colorsys
import json
import os
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from .synthetic_root import prepare_root, progress_bar, read_completion_marker, write_completion_marker

# The first 20 ImageNet-1k classes, sorted (class index = position).
IMAGENET_WNIDS_HEAD = (
    'n01440764', 'n01443537', 'n01484850', 'n01491361', 'n01494475', 'n01496331', 'n01498041', 'n01514668',
    'n01514859', 'n01518878', 'n01530575', 'n01531178', 'n01532829', 'n01534433', 'n01537544', 'n01558993',
    'n01560419', 'n01580077', 'n01582220', 'n01592084')
TEXTURES = ('solid', 'stripes')
OWNER_STAMP = '.synthetic_imagenet'
OURS = ('imagenet-1k', 'imagenetv2', 'imagenet-sketch', 'imagenet-a', 'imagenet-r')
V2_DIR = 'imagenetv2/imagenetv2-matched-frequency-format-val'
JPEG_QUALITY = 90

# ReaL relabelling of val images (fractions).
REAL_TWO_OBJECTS, REAL_NO_OBJECT, REAL_MISFILED = 0.08, 0.07, 0.05


def class_styles(num_classes: int) -> List[dict]:
    """Class i: hue from ``ceil(num_classes / 2)`` evenly spaced hues, texture alternating."""
    hues = (num_classes + 1) // 2
    return [dict(hue=360.0 * (i // 2) / hues, texture=TEXTURES[i % 2]) for i in range(num_classes)]


def subset_classes(num_classes: int, which: str) -> List[int]:
    """ImageNet-A/-R stand-ins cover 60% / 70% of the classes, different ones (as the real 200-class sets differ)."""
    k_a, k_r = max(2, round(0.6 * num_classes)), max(2, round(0.7 * num_classes))
    return list(range(num_classes))[::-1][:k_a][::-1] if which == 'a' else list(range(k_r))


def generate_synthetic_imagenet(root: str, num_classes: int = 10, train_per_class: int = 60,
                                val_per_class: int = 20, variant_per_class: int = 10,
                                size: Tuple[int, int] = (64, 96), val_layout: str = 'folders', seed: int = 0,
                                progress: bool = True, overwrite: bool = False) -> dict:
    """Writes the set under ``root`` and returns a summary (also stored in ``<root>/.complete``).

    Args:
        num_classes: 2..20 (wnids of the first ImageNet classes).
        train_per_class, val_per_class, variant_per_class: images per class and split.
        size: (lo, hi): height and width drawn independently per image.
        val_layout: ``'folders'`` (val/<wnid>/) or ``'flat'`` (val/*.JPEG + meta/val.txt).
        overwrite: replace a set written by this generator (other folders are never touched).
    """
    if not 2 <= num_classes <= len(IMAGENET_WNIDS_HEAD):
        raise ValueError(f'num_classes must be in 2..{len(IMAGENET_WNIDS_HEAD)}, got {num_classes}')
    if val_layout not in ('folders', 'flat'):
        raise ValueError(f"val_layout must be 'folders' or 'flat', got {val_layout!r}")
    lo, hi = size
    if not 28 <= lo <= hi:
        raise ValueError(f'size must be (lo, hi) with 28 <= lo <= hi, got {size}')
    root = os.path.abspath(root)
    prepare_root(root, overwrite, dataset='ImageNet', owner_stamp=OWNER_STAMP, generated=OURS)
    start = time.time()
    wnids = list(IMAGENET_WNIDS_HEAD[:num_classes])
    styles = class_styles(num_classes)
    jobs = _plan(root, wnids, train_per_class, val_per_class, variant_per_class, val_layout, seed)

    for job in progress_bar(jobs, progress, f'synthetic ImageNet -> {root}'):
        rng = np.random.default_rng(np.random.SeedSequence([seed, job['stream'], job['index']]))
        h, w = (int(v) for v in rng.integers(lo, hi + 1, size=2))
        img = render(rng, h, w, [styles[c] for c in job['shown']], job['style'])
        os.makedirs(os.path.dirname(job['path']), exist_ok=True)
        Image.fromarray(img).save(job['path'], quality=JPEG_QUALITY)

    base = os.path.join(root, 'imagenet-1k')
    os.makedirs(os.path.join(base, 'meta'), exist_ok=True)
    for split in ('train', 'val'):
        with open(os.path.join(base, 'meta', f'{split}.txt'), 'w') as f:
            for j in sorted((j for j in jobs if j['split'] == split), key=lambda j: j['path']):
                f.write(f"{os.path.relpath(j['path'], os.path.join(base, split))} {j['label']}\n")
    val_jobs = sorted((j for j in jobs if j['split'] == 'val'), key=lambda j: j['val_number'])
    with open(os.path.join(base, 'real.json'), 'w') as f:
        json.dump([j['real'] for j in val_jobs], f)
    for name, text in (('imagenet-a', 'Synthetic stand-in for ImageNet-A.'),
                       ('imagenet-r', 'Synthetic stand-in for ImageNet-R.')):
        os.makedirs(os.path.join(root, name), exist_ok=True)  # no images there with variant_per_class=0
        with open(os.path.join(root, name, 'README.txt'), 'w') as f:
            f.write(text + '\n')

    counts: Dict[str, int] = {}
    for j in jobs:
        counts[j['split']] = counts.get(j['split'], 0) + 1
    summary = dict(root=root, num_classes=num_classes, wnids=wnids, styles=styles, seed=seed, size=[lo, hi],
                   val_layout=val_layout, counts=counts, subsets=dict(a=subset_classes(num_classes, 'a'),
                                                                      r=subset_classes(num_classes, 'r')),
                   real=dict(two_objects=sum(len(j['real']) == 2 for j in val_jobs),
                             no_object=sum(not j['real'] for j in val_jobs),
                             misfiled=sum(len(j['shown']) == 1 and j['shown'][0] != j['label']
                                          for j in val_jobs)),
                   seconds=round(time.time() - start, 3))
    write_completion_marker(root, summary)
    return summary



def describe(s: dict) -> str:
    """What :func:`generate_synthetic_imagenet` wrote, for people: splits, classes, the variants' quirks."""
    lines = [f"wrote {sum(s['counts'].values())} images to {s['root']} in {s['seconds']:.1f} s (seed {s['seed']})"]
    lines += [f'  {split:<7} {n:>5}' for split, n in s['counts'].items()]
    lines.append(f"classes: {s['num_classes']} (wnids {s['wnids'][0]} .. {s['wnids'][-1]}, class index = position "
                 'in the sorted train folders)')
    lines.append(f"  ImageNet-A stand-in covers classes {s['subsets']['a']}, ImageNet-R stand-in {s['subsets']['r']}")
    r = s['real']
    lines.append(f"ReaL: {r['two_objects']} val images with two labels, {r['no_object']} without any (not scored), "
                 f"{r['misfiled']} filed under the wrong class")
    return '\n'.join(lines)

def read_summary(root: str) -> Optional[dict]:
    """The summary a finished run stored, or None if there is no (readable) marker."""
    return read_completion_marker(root)


def is_complete(root: str) -> bool:
    return read_summary(root) is not None


# ---------------------------------------------------------------------- plan
def _plan(root, wnids, n_train, n_val, n_var, val_layout, seed) -> List[dict]:
    """Every image to write: path, label (its folder's class), classes shown, style, ReaL set."""
    K = len(wnids)
    base = os.path.join(root, 'imagenet-1k')
    jobs = []
    for c, wnid in enumerate(wnids):
        for k in range(n_train):
            jobs.append(dict(split='train', stream=0, index=c * n_train + k, label=c, shown=[c], style='photo',
                             path=os.path.join(base, 'train', wnid, f'{wnid}_{k + 1}.JPEG')))
    # Val numbers are shuffled across classes, as in ILSVRC2012.
    rng = np.random.default_rng(np.random.SeedSequence([seed, 99]))
    order = rng.permutation(K * n_val)
    for pos in range(K * n_val):
        c, number = pos // n_val, int(order[pos]) + 1
        shown, real = [c], [c]
        u = rng.uniform()
        if u < REAL_TWO_OBJECTS:
            other = int((c + rng.integers(1, K)) % K)
            shown, real = [c, other], sorted([c, other])
        elif u < REAL_TWO_OBJECTS + REAL_NO_OBJECT:
            shown, real = [], []
        elif u < REAL_TWO_OBJECTS + REAL_NO_OBJECT + REAL_MISFILED:
            other = int((c + rng.integers(1, K)) % K)
            shown, real = [other], [other]
        name = f'ILSVRC2012_val_{number:08d}.JPEG'
        folder = os.path.join(base, 'val', wnids[c]) if val_layout == 'folders' else os.path.join(base, 'val')
        jobs.append(dict(split='val', stream=1, index=pos, label=c, shown=shown, style='photo', real=real,
                         val_number=number, path=os.path.join(folder, name)))
    for c, wnid in enumerate(wnids):
        for k in range(n_var):
            i = c * n_var + k
            digest = f'{(i * 2654435761) % (1 << 32):08x}{i:04x}'
            jobs.append(dict(split='v2', stream=2, index=i, label=c, shown=[c], style='v2',
                             path=os.path.join(root, V2_DIR, str(c), f'{digest}.jpeg')))
            jobs.append(dict(split='sketch', stream=3, index=i, label=c, shown=[c], style='sketch',
                             path=os.path.join(root, 'imagenet-sketch', 'sketch', wnid, f'sketch_{k}.JPEG')))
    for split, stream, style in (('a', 4, 'hard'), ('r', 5, 'rendition')):
        for c in subset_classes(K, split):
            for k in range(n_var):
                name = f'{k}.jpg' if split == 'a' else f"{('cartoon', 'painting', 'toy')[k % 3]}_{k}.jpg"
                jobs.append(dict(split=split, stream=stream, index=c * n_var + k, label=c, shown=[c], style=style,
                                 path=os.path.join(root, f'imagenet-{split}', wnids[c], name)))
    return jobs


# ----------------------------------------------------------------- rendering
def render(rng: np.random.Generator, h: int, w: int, objects: Sequence[dict], style: str = 'photo') -> np.ndarray:
    """An HxWx3 uint8 picture of ``objects`` (class styles) in ``style``."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if style == 'rendition':
        bg = np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.2, 0.5), rng.uniform(0.75, 1.0)),
                      dtype=np.float32)
        img = np.broadcast_to(bg, (h, w, 3)).copy()
    elif style == 'sketch':
        img = np.full((h, w, 3), rng.uniform(0.9, 1.0), dtype=np.float32)
    else:
        img = _photo_background(rng, h, w, busy=style == 'hard')

    small = style in ('hard', 'v2')
    n = len(objects)
    for i, obj in enumerate(objects):
        scale = rng.uniform(0.22, 0.32) if style == 'hard' else rng.uniform(0.3, 0.42) if small else \
            rng.uniform(0.35, 0.48)
        r = scale * min(h, w) / (1.0 if n == 1 else 1.3)
        cy = rng.uniform(r * 0.8, h - r * 0.8)
        cx = (rng.uniform(r * 0.8, w - r * 0.8) if n == 1 else
              (i + 0.5) * w / n + rng.uniform(-0.1, 0.1) * w / n)
        mask = _shape(rng, yy, xx, cy, cx, r)
        _paint(rng, img, mask, obj, style, yy, xx)

    noise = dict(photo=0.03, v2=0.05, hard=0.09, rendition=0.01, sketch=0.02)[style]
    if style != 'sketch' and style != 'rendition':
        contrast, brightness = rng.uniform(0.85, 1.15), rng.uniform(-0.05, 0.05)
        img = (img - 0.5) * contrast + 0.5 + brightness
    img = img + rng.normal(0, noise, size=img.shape).astype(np.float32)
    if style == 'sketch':
        img = np.repeat(img.mean(axis=2, keepdims=True), 3, axis=2)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def _photo_background(rng, h, w, busy):
    grey = rng.uniform(0.35, 0.65)
    base = np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0, 0.15), grey), dtype=np.float32)
    cells = int(rng.integers(2, 5))
    shade = np.asarray(Image.fromarray(rng.normal(0, 0.1, size=(cells, cells)).astype(np.float32))
                       .resize((w, h), Image.BICUBIC))
    img = base + shade[..., None]
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(int(rng.integers(8, 16) if busy else rng.integers(2, 6))):
        cy, cx, rad = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(2, 6 if busy else 4)
        sat = rng.uniform(0.5, 0.9) if busy else rng.uniform(0, 0.2)
        colour = colorsys.hsv_to_rgb(rng.uniform(), sat, rng.uniform(0.3, 0.9))
        img[(yy - cy) ** 2 + (xx - cx) ** 2 <= rad ** 2] = colour
    return img


def _shape(rng, yy, xx, cy, cx, r):
    t = rng.uniform(0, np.pi)
    u = (xx - cx) * np.cos(t) + (yy - cy) * np.sin(t)
    v = -(xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)
    kind = rng.integers(3)
    if kind == 0:
        return (u / (r * rng.uniform(0.8, 1.2))) ** 2 + (v / (r * rng.uniform(0.8, 1.2))) ** 2 <= 1
    if kind == 1:
        return (np.abs(u) <= r * rng.uniform(0.7, 1.0)) & (np.abs(v) <= r * rng.uniform(0.7, 1.0))
    return (np.abs(u) + np.abs(v)) <= r * 1.2  # diamond


def _paint(rng, img, mask, obj, style, yy, xx):
    hue_jitter = 25 if style == 'rendition' else 10
    hue = (obj['hue'] + rng.uniform(-hue_jitter, hue_jitter)) / 360 % 1
    t = rng.uniform(0, np.pi)
    period = rng.uniform(5, 8)
    stripes = ((xx * np.cos(t) + yy * np.sin(t) + rng.uniform(0, period)) % period) < period * 0.45
    edge = mask & ~_erode(mask, 2 if style == 'rendition' else 1)
    if style == 'sketch':
        img[edge] = rng.uniform(0.05, 0.25)
        if obj['texture'] == 'stripes':
            img[mask & stripes & ~edge] = rng.uniform(0.3, 0.5)
        return
    sat = rng.uniform(0.35, 0.7) if style == 'hard' else rng.uniform(0.6, 1.0)
    colour = np.array(colorsys.hsv_to_rgb(hue, sat, rng.uniform(0.65, 1.0)), dtype=np.float32)
    if style == 'rendition':
        colour = np.round(colour * 3) / 3  # posterised
    img[mask] = colour
    if obj['texture'] == 'stripes':
        img[mask & stripes] = colour * rng.uniform(0.25, 0.4)
    if style == 'rendition':
        img[edge] = 0.05


def _erode(mask, steps):
    m = mask.copy()
    for _ in range(steps):
        inner = m.copy()
        inner[1:] &= m[:-1]
        inner[:-1] &= m[1:]
        inner[:, 1:] &= m[:, :-1]
        inner[:, :-1] &= m[:, 1:]
        m = inner
    return m
