"""A small synthetic segmentation set in ADE20K's on-disk layout.

It exists so that the whole training path (mmseg's ``ADE20KDataset``, the
pipeline, a tiny InternViT and a decode head) can be exercised end to end on a
CPU in minutes, with a task that is actually learnable, so a falling loss and a
rising mIoU mean something::

    <root>/images/training/ADE_train_00000001.jpg
    <root>/annotations/training/ADE_train_00000001.png
    <root>/images/validation/ADE_val_00000001.jpg
    <root>/annotations/validation/ADE_val_00000001.png
    <root>/.synthetic_ade20k  (written first; marks the folder as ours)
    <root>/.complete          (written last; JSON summary)

Each image is a cluttered, low-saturation background labelled *wall* with 2-5
shapes (discs/ellipses, rectangles, triangles) on top. A shape's class is a
function of its colour and texture only, never of its geometry; two pairs of
classes share a hue and differ only in texture, so a per-pixel colour lookup
is not enough to solve the task, while a model that sees a 14 px patch is.

Annotation values follow ADE20K: ``0`` is "other" (ignored after mmseg's
``reduce_zero_label``) and ``v`` in 1..150 is ADE class ``v - 1``. A thin ring
along every shape boundary is left at 0, like the unlabelled seams of real ADE
annotations.
"""
import colorsys
import os
import time
from typing import Dict, Iterable, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from .synthetic_root import prepare_root, progress_bar, read_completion_marker, write_completion_marker

# ADE20K file values (1-based; mmseg class index is value - 1).
BACKGROUND_CLASS = 1  # wall

# Shape classes: file value -> appearance. Hues in degrees. The ADE names are
# only mnemonic; tests check them against mmseg's ADE20KDataset.METAINFO.
# red and blue are each used twice, told apart by texture alone.
SHAPE_STYLES: Dict[int, dict] = {
    8: dict(name='bed', hue=0, texture='solid'),
    13: dict(name='person', hue=0, texture='stripes'),
    18: dict(name='plant', hue=120, texture='solid'),
    21: dict(name='car', hue=225, texture='solid'),
    20: dict(name='chair', hue=225, texture='dots'),
    23: dict(name='painting', hue=55, texture='stripes'),
    16: dict(name='table', hue=300, texture='dots'),
}
SHAPE_CLASSES: Tuple[int, ...] = tuple(sorted(SHAPE_STYLES))
CLASSES_USED: Tuple[int, ...] = tuple(sorted((BACKGROUND_CLASS, ) + SHAPE_CLASSES))
CLASS_NAMES: Dict[int, str] = {BACKGROUND_CLASS: 'wall', **{v: s['name'] for v, s in SHAPE_STYLES.items()}}
IGNORE_VALUE = 0

SPLITS = (('training', 'ADE_train'), ('validation', 'ADE_val'))
OWNER_STAMP = '.synthetic_ade20k'
JPEG_QUALITY = 90

# Shapes must span a few 14 px patches to be learnable by a patch-14 ViT.
MIN_RADIUS = 15
SHAPES_PER_IMAGE = (2, 5)
HUE_JITTER = 10  # degrees; hues of different classes are >= 55 degrees apart


def generate_synthetic_ade20k(root: str,
                              num_train: int = 200,
                              num_val: int = 40,
                              size: Union[int, Tuple[int, int]] = (120, 160),
                              seed: int = 0,
                              classes: Optional[Iterable[int]] = None,
                              progress: bool = True,
                              overwrite: bool = False) -> dict:
    """Writes the set under ``root`` and returns a summary (also stored in ``<root>/.complete``).

    Args:
        root: output directory; must be missing or empty unless ``overwrite``.
        num_train, num_val: number of images per split.
        size: side length in pixels, or ``(lo, hi)`` to draw height and width
            independently from ``[lo, hi]`` per image.
        seed: everything is a function of ``seed``; image ``i`` of a split does
            not depend on how many images the split has.
        classes: shape classes (file values, a subset of ``SHAPE_CLASSES``);
            default all of them. The background (wall) is always used.
        progress: show a progress bar.
        overwrite: replace a previous set in ``root``. Only the split folders
            and the marker are removed; other files in ``root`` are left alone,
            and split folders this module did not write are never removed.
    """
    shape_classes = _check_classes(classes)
    lo, hi = (size, size) if isinstance(size, int) else tuple(size)
    if not 2 * MIN_RADIUS + 8 <= lo <= hi:
        raise ValueError(f'size must be an int or (lo, hi) with {2 * MIN_RADIUS + 8} <= lo <= hi, got {size!r}')
    if num_train < 0 or num_val < 0:
        raise ValueError('num_train and num_val must be >= 0')

    root = os.path.abspath(root)
    prepare_root(root, overwrite, dataset='ADE20K', owner_stamp=OWNER_STAMP,
                 generated=[f'{sub}/{split}' for sub in ('images', 'annotations') for split, _ in SPLITS])

    start = time.time()
    counts = np.zeros(256, dtype=np.int64)
    summary_paths = {}
    jobs = []
    for split_id, ((split, prefix), n) in enumerate(zip(SPLITS, (num_train, num_val))):
        img_dir = os.path.join(root, 'images', split)
        ann_dir = os.path.join(root, 'annotations', split)
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(ann_dir, exist_ok=True)
        summary_paths[split] = dict(img_dir=img_dir, ann_dir=ann_dir, count=n)
        jobs += [(split_id, i, img_dir, ann_dir, prefix) for i in range(n)]

    for split_id, i, img_dir, ann_dir, prefix in progress_bar(jobs, progress, desc=f'synthetic ADE20K -> {root}'):
        rng = np.random.default_rng(np.random.SeedSequence([seed, split_id, i]))
        image, label = render_sample(rng, lo, hi, shape_classes)
        stem = f'{prefix}_{i + 1:08d}'
        Image.fromarray(image).save(os.path.join(img_dir, stem + '.jpg'), quality=JPEG_QUALITY)
        Image.fromarray(label).save(os.path.join(ann_dir, stem + '.png'))
        if split_id == 0:
            counts += np.bincount(label.ravel(), minlength=256)

    used = sorted((BACKGROUND_CLASS, ) + shape_classes)
    summary = dict(
        root=root,
        num_train=num_train,
        num_val=num_val,
        seed=seed,
        size=[lo, hi],
        background_class=BACKGROUND_CLASS,
        shape_classes=list(shape_classes),
        classes=used,
        class_names={v: CLASS_NAMES[v] for v in used},
        train_pixel_counts={int(v): int(c) for v, c in enumerate(counts) if c},
        paths=summary_paths,
        seconds=round(time.time() - start, 3),
    )
    write_completion_marker(root, summary)
    return summary


def describe(s: dict) -> str:
    """What :func:`generate_synthetic_ade20k` wrote, for people: splits, folders, classes and their shares."""
    from mmseg.datasets import ADE20KDataset
    names = ADE20KDataset.METAINFO['classes']
    total = sum(s['train_pixel_counts'].values())
    lines = [f"wrote {s['num_train']} training + {s['num_val']} validation images to {s['root']} "
             f"in {s['seconds']:.1f} s (seed {s['seed']})"]
    for split, info in s['paths'].items():
        lines.append(f"  {split:<10} {info['count']:>5}  {info['img_dir']}  {info['ann_dir']}")
    lines.append('classes (file value -> mmseg class index: ADE20K name, share of training pixels):')
    lines.append(f"  {0:>3} -> 255 (ignored): other/unlabelled, {s['train_pixel_counts'].get(0, 0) / total:.1%}")
    for v in s['classes']:
        role = 'background' if v == s['background_class'] else 'shape'
        lines.append(f"  {v:>3} -> {v - 1:>3}: {names[v - 1].strip():<10} {role:<10} "
                     f"{s['train_pixel_counts'].get(v, 0) / total:.1%}")
    return '\n'.join(lines)


def is_complete(root: str) -> bool:
    """True if ``root`` holds a finished set whose files are all still there."""
    summary = read_summary(root)
    if summary is None:
        return False
    for split, prefix in SPLITS:
        n = summary['paths'][split]['count']
        for sub, ext in (('images', '.jpg'), ('annotations', '.png')):
            d = os.path.join(root, sub, split)
            if not os.path.isdir(d) or sum(f.endswith(ext) for f in os.listdir(d)) != n:
                return False
    return True


def read_summary(root: str) -> Optional[dict]:
    """The summary a finished run stored, or None if there is no (readable) marker."""
    summary = read_completion_marker(root)
    if summary is None:
        return None
    # JSON turned the integer class values into strings.
    summary['class_names'] = {int(k): v for k, v in summary['class_names'].items()}
    summary['train_pixel_counts'] = {int(k): v for k, v in summary['train_pixel_counts'].items()}
    return summary


# --------------------------------------------------------------------- rendering


def render_sample(rng: np.random.Generator, lo: int, hi: int,
                  shape_classes: Sequence[int] = SHAPE_CLASSES) -> Tuple[np.ndarray, np.ndarray]:
    """One (HxWx3 uint8 image, HxW uint8 label) pair."""
    h, w = (int(v) for v in rng.integers(lo, hi + 1, size=2))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = _background(rng, h, w, yy, xx)
    label = np.full((h, w), BACKGROUND_CLASS, dtype=np.uint8)

    placed = []  # (cy, cx, r) of shapes already drawn, to limit occlusion
    for _ in range(rng.integers(SHAPES_PER_IMAGE[0], SHAPES_PER_IMAGE[1] + 1)):
        for _attempt in range(20):
            r = rng.uniform(MIN_RADIUS, max(MIN_RADIUS + 1, 0.3 * min(h, w)))
            # Up to about a third of a shape may leave the frame, as objects do.
            cy, cx = rng.uniform(0.4 * r, h - 0.4 * r), rng.uniform(0.4 * r, w - 0.4 * r)
            # Partial overlap is fine (and realistic); hiding a shape almost entirely is not.
            if all(np.hypot(cy - py, cx - px) >= 0.75 * (r + pr) for py, px, pr in placed):
                break
        else:
            continue
        placed.append((cy, cx, r))
        cls = shape_classes[rng.integers(len(shape_classes))]
        mask = _shape_mask(rng, yy, xx, cy, cx, r)
        if mask.sum() < 30:
            continue
        img[mask] = _shape_pixels(rng, SHAPE_STYLES[cls], yy, xx, cy, cx, r)[mask]
        label[mask] = cls
        label[_boundary(mask)] = IGNORE_VALUE

    # Global photometric jitter and sensor noise, applied over shapes and background alike.
    contrast, brightness = rng.uniform(0.85, 1.15), rng.uniform(-0.06, 0.06)
    img = (img - 0.5) * contrast + 0.5 + brightness
    img += rng.normal(0, 0.025, size=img.shape).astype(np.float32)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), label


def _background(rng, h, w, yy, xx):
    """Grey-ish wall: blotchy low-frequency shading, faint tint, small low-saturation clutter."""
    base = np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0, 0.18), rng.uniform(0.35, 0.7)),
                    dtype=np.float32)
    shade = _smooth_noise(rng, h, w, cells=rng.integers(3, 7), scale=0.12)
    tint = np.stack([_smooth_noise(rng, h, w, cells=3, scale=0.03) for _ in range(3)], axis=-1)
    img = base + shade[..., None] + tint

    # Clutter is kept small (<~10 px across, or 1-2 px thin) and unsaturated so
    # that it cannot pass for a shape, but it does stop "flat = wall" from working.
    for _ in range(rng.integers(6, 15)):
        grey = np.clip(base.mean() + rng.uniform(-0.3, 0.3), 0, 1)
        colour = np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0, 0.25), grey), dtype=np.float32)
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        kind = rng.integers(3)
        if kind == 0:  # thin line segment
            t = rng.uniform(0, np.pi)
            length, width = rng.uniform(8, 25), rng.uniform(0.6, 1.2)
            u = (xx - cx) * np.cos(t) + (yy - cy) * np.sin(t)
            v = -(xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)
            m = (np.abs(u) <= length / 2) & (np.abs(v) <= width)
        elif kind == 1:  # small box
            a, b = rng.uniform(1.5, 5, size=2)
            m = (np.abs(yy - cy) <= a) & (np.abs(xx - cx) <= b)
        else:  # small blob
            m = np.hypot(yy - cy, xx - cx) <= rng.uniform(1.5, 4.5)
        img[m] = colour
    return img


def _smooth_noise(rng, h, w, cells, scale):
    """Random values on a coarse grid, interpolated up to h x w."""
    grid = rng.normal(0, scale, size=(int(cells), int(cells))).astype(np.float32)
    return np.asarray(Image.fromarray(grid).resize((w, h), Image.BICUBIC))


def _shape_mask(rng, yy, xx, cy, cx, r):
    kind = rng.integers(3)
    t = rng.uniform(0, np.pi)
    u = (xx - cx) * np.cos(t) + (yy - cy) * np.sin(t)
    v = -(xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)
    if kind == 0:  # disc or mild ellipse
        a = r * rng.uniform(0.8, 1.2)
        b = r * rng.uniform(0.8, 1.2)
        return (u / a)**2 + (v / b)**2 <= 1
    if kind == 1:  # rectangle
        a = r * rng.uniform(0.75, 1.1)
        b = r * rng.uniform(0.6, 1.1)
        return (np.abs(u) <= a) & (np.abs(v) <= b)
    # Triangle: a triangle of circumradius R has far less area than the disc of
    # radius R, so it is drawn larger to stay comparable.
    angles = t + np.array([0, 2 * np.pi / 3, 4 * np.pi / 3]) + rng.uniform(-0.35, 0.35, size=3)
    R = 1.35 * r
    py, px = cy + R * np.sin(angles), cx + R * np.cos(angles)
    inside = np.ones_like(xx, dtype=bool)
    for k in range(3):
        (y0, x0), (y1, x1) = (py[k], px[k]), (py[(k + 1) % 3], px[(k + 1) % 3])
        side = (x1 - x0) * (yy - y0) - (y1 - y0) * (xx - x0)
        # Same side as the centre for all three edges.
        sign = np.sign((x1 - x0) * (cy - y0) - (y1 - y0) * (cx - x0))
        inside &= side * sign >= 0
    return inside


def _shape_pixels(rng, style, yy, xx, cy, cx, r):
    """Full-frame colour field of a shape of the given style (callers keep only its mask)."""
    hue = (style['hue'] + rng.uniform(-HUE_JITTER, HUE_JITTER)) / 360 % 1
    colour = np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.65, 1.0), rng.uniform(0.65, 1.0)), dtype=np.float32)
    # A soft lighting gradient so that a shape is not one flat colour.
    g = rng.uniform(-0.12, 0.12, size=2)
    light = 1 + (g[0] * (yy - cy) + g[1] * (xx - cx)) / r
    field = colour * light[..., None]

    t = rng.uniform(0, np.pi)
    u = (xx - cx) * np.cos(t) + (yy - cy) * np.sin(t)
    v = -(xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)
    if style['texture'] == 'stripes':
        # 5-8 px period: two or so stripes per 14 px patch.
        period = rng.uniform(5, 8)
        dark = (u + rng.uniform(0, period)) % period < period * rng.uniform(0.4, 0.55)
        field[dark] *= rng.uniform(0.25, 0.4)
    elif style['texture'] == 'dots':
        period = rng.uniform(5.5, 7.5)
        du = (u + rng.uniform(0, period)) % period - period / 2
        dv = (v + rng.uniform(0, period)) % period - period / 2
        dot = np.hypot(du, dv) <= rng.uniform(1.4, 2.0)
        # Pale dots: mostly white with a trace of the shape's colour.
        field[dot] = np.clip(field[dot] * 0.35 + 0.62, 0, 1)
    return field


def _boundary(mask):
    """Pixels within one pixel of the mask's edge, inside or outside (a ~2 px ring)."""
    grown, shrunk = mask.copy(), mask.copy()
    for axis in (0, 1):
        for shift in (1, -1):
            nb = np.roll(mask, shift, axis=axis)
            # np.roll wraps around; the wrapped row/column must not count as a neighbour.
            edge = (0 if shift == 1 else -1)
            if axis == 0:
                nb[edge, :] = mask[edge, :]
            else:
                nb[:, edge] = mask[:, edge]
            grown |= nb
            shrunk &= nb
    return grown & ~shrunk


# ------------------------------------------------------------------------ helpers


def _check_classes(classes):
    if classes is None:
        return SHAPE_CLASSES
    chosen = tuple(sorted(set(int(c) for c in classes)))
    unknown = [c for c in chosen if c not in SHAPE_STYLES]
    if unknown or not chosen:
        raise ValueError(f'classes must be a non-empty subset of {SHAPE_CLASSES} (ADE20K file values), '
                         f'got {sorted(classes)}')
    return chosen
