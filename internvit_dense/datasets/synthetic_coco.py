"""A small synthetic instance-segmentation set in COCO's on-disk layout and JSON format.

It exists so that the whole detection path (mmdet's ``CocoDataset``, the pipeline,
a tiny InternViT, Mask R-CNN and ``CocoMetric``) can be exercised end to end on a CPU
in minutes, on a task that is actually learnable, so a rising AP means something::

    <root>/annotations/instances_train2017.json
    <root>/annotations/instances_val2017.json
    <root>/train2017/000000000001.jpg ...
    <root>/val2017/000001000001.jpg ...
    <root>/.synthetic_coco  (written first; marks the folder as ours)
    <root>/.complete        (written last; JSON summary)

Each image is the cluttered, low-saturation wall of the synthetic ADE20K set with
1-4 objects on it. An object's category fixes its outline, hue and texture together
(a red solid ellipse is always a ``ball``), with size, rotation, aspect, exact hue,
brightness and lighting drawn per object.

Annotations are real COCO records: every object is one ``segmentation`` polygon
(``iscrowd=0``), its ``bbox`` is the polygon's extent, its ``area`` the pixel count
of the polygon rasterised by pycocotools, and exactly those pixels are painted, so
image, mask, box and area agree. Objects do not overlap and lie inside the image,
so no polygon covers a hidden part of an object.
"""
import json
import os
import time
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
from PIL import Image

from .synthetic_ade20k import _background, _shape_pixels
from .synthetic_root import prepare_root, progress_bar, read_completion_marker, write_completion_marker

# id -> appearance. Hues in degrees; shape is the polygon outline.
CATEGORIES: Tuple[dict, ...] = (
    dict(id=1, name='ball', supercategory='shape', outline='ellipse', hue=0, texture='solid'),
    dict(id=2, name='crate', supercategory='shape', outline='rectangle', hue=220, texture='stripes'),
    dict(id=3, name='cone', supercategory='shape', outline='triangle', hue=120, texture='solid'),
    dict(id=4, name='gem', supercategory='shape', outline='hexagon', hue=50, texture='dots'),
)
CLASS_NAMES: Tuple[str, ...] = tuple(c['name'] for c in CATEGORIES)
COCO_CATEGORY_KEYS = ('id', 'name', 'supercategory')

# split name -> (image folder, annotation file, first image id). Ids are unique across
# the splits, as in COCO, and image i of a split keeps its id whatever the split's size.
SPLITS: Dict[str, Tuple[str, str, int]] = {
    'train': ('train2017', 'annotations/instances_train2017.json', 1),
    'val': ('val2017', 'annotations/instances_val2017.json', 1_000_001),
}
OWNER_STAMP = '.synthetic_coco'
JPEG_QUALITY = 90

OBJECTS_PER_IMAGE = (1, 4)
# Circumradius in pixels: an object spans at least ~2 patches of 16 px, at most ~2/3 of the image.
MIN_RADIUS = 14
MAX_RADIUS_FRACTION = 0.33
ELLIPSE_VERTICES = 32


def generate_synthetic_coco(root: str,
                            num_train: int = 200,
                            num_val: int = 40,
                            size: Union[int, Tuple[int, int]] = (128, 160),
                            seed: int = 0,
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
        progress: show a progress bar.
        overwrite: replace a previous set in ``root``. Only the image folders, the
            annotation files and the marker are removed; other files are left alone,
            and folders this module did not write are never removed.
    """
    lo, hi = (size, size) if isinstance(size, int) else tuple(size)
    if not 4 * MIN_RADIUS <= lo <= hi:
        raise ValueError(f'size must be an int or (lo, hi) with {4 * MIN_RADIUS} <= lo <= hi, got {size!r}')
    if num_train < 0 or num_val < 0:
        raise ValueError('num_train and num_val must be >= 0')

    root = os.path.abspath(root)
    prepare_root(root, overwrite, dataset='COCO', owner_stamp=OWNER_STAMP,
                 generated=[p for folder, ann_file, _ in SPLITS.values() for p in (folder, ann_file)])
    os.makedirs(os.path.join(root, 'annotations'), exist_ok=True)

    start = time.time()
    records = {}
    jobs = []
    for split_id, (split, n) in enumerate(zip(SPLITS, (num_train, num_val))):
        img_dir = os.path.join(root, SPLITS[split][0])
        os.makedirs(img_dir, exist_ok=True)
        records[split] = dict(images=[], annotations=[])
        jobs += [(split_id, split, i) for i in range(n)]

    for split_id, split, i in progress_bar(jobs, progress, desc=f'synthetic COCO -> {root}'):
        rng = np.random.default_rng(np.random.SeedSequence([seed, split_id, i]))
        image, objects = render_sample(rng, lo, hi)
        image_id = SPLITS[split][2] + i
        file_name = f'{image_id:012d}.jpg'
        Image.fromarray(image).save(os.path.join(root, SPLITS[split][0], file_name), quality=JPEG_QUALITY)
        records[split]['images'].append(dict(id=image_id, file_name=file_name, height=image.shape[0],
                                             width=image.shape[1], license=1))
        # Annotation ids follow from the image id, so they too do not depend on the split's size.
        records[split]['annotations'] += [dict(id=image_id * 100 + k, image_id=image_id, **obj)
                                          for k, obj in enumerate(objects)]

    paths, counts = {}, {}
    for split, (img_folder, ann_file, _) in SPLITS.items():
        coco = dict(info=dict(description='internvit-dense synthetic COCO-format shapes', version='1.0',
                              year=2017, contributor='internvit_dense.datasets.synthetic_coco', seed=seed),
                    licenses=[dict(id=1, name='generated', url='')],
                    images=records[split]['images'],
                    annotations=records[split]['annotations'],
                    categories=[{k: c[k] for k in COCO_CATEGORY_KEYS} for c in CATEGORIES])
        with open(os.path.join(root, ann_file), 'w') as f:
            json.dump(coco, f)
        per_cat = {c['name']: 0 for c in CATEGORIES}
        for ann in records[split]['annotations']:
            per_cat[CLASS_NAMES[ann['category_id'] - 1]] += 1
        counts[split] = per_cat
        paths[split] = dict(img_dir=os.path.join(root, img_folder), ann_file=os.path.join(root, ann_file),
                            images=len(records[split]['images']), objects=len(records[split]['annotations']))

    summary = dict(root=root, num_train=num_train, num_val=num_val, seed=seed, size=[lo, hi],
                   classes=list(CLASS_NAMES), objects_per_class=counts, paths=paths,
                   seconds=round(time.time() - start, 3))
    write_completion_marker(root, summary)
    return summary


def describe(s: dict) -> str:
    """What :func:`generate_synthetic_coco` wrote, for people: splits, annotation files, categories."""
    lines = [f"wrote {s['num_train']} training + {s['num_val']} validation images to {s['root']} "
             f"in {s['seconds']:.1f} s (seed {s['seed']})"]
    for split, info in s['paths'].items():
        lines.append(f"  {split:<5} {info['images']:>5} images {info['objects']:>6} objects  {info['ann_file']}")
    lines.append('categories (COCO id: name, appearance, training objects):')
    for c in CATEGORIES:
        look = f"{c['texture']} {c['outline']}, hue {c['hue']}"
        lines.append(f"  {c['id']}: {c['name']:<6} {look:<28} {s['objects_per_class']['train'][c['name']]:>6}")
    return '\n'.join(lines)


def is_complete(root: str) -> bool:
    """True if ``root`` holds a finished set whose files are all still there."""
    summary = read_summary(root)
    if summary is None:
        return False
    for split, (img_folder, ann_file, _) in SPLITS.items():
        img_dir = os.path.join(root, img_folder)
        if not os.path.isfile(os.path.join(root, ann_file)) or not os.path.isdir(img_dir):
            return False
        if sum(f.endswith('.jpg') for f in os.listdir(img_dir)) != summary['paths'][split]['images']:
            return False
    return True


def read_summary(root: str) -> Optional[dict]:
    """The summary a finished run stored, or None if there is no (readable) marker."""
    return read_completion_marker(root)


# --------------------------------------------------------------------- rendering


def render_sample(rng: np.random.Generator, lo: int, hi: int) -> Tuple[np.ndarray, List[dict]]:
    """One HxWx3 uint8 image and its objects as COCO annotation fields (without ids)."""
    from pycocotools import mask as mask_utils

    h, w = (int(v) for v in rng.integers(lo, hi + 1, size=2))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = _background(rng, h, w, yy, xx)

    objects, placed = [], []  # placed: (cy, cx, R) of the objects' circumcircles
    for _ in range(rng.integers(OBJECTS_PER_IMAGE[0], OBJECTS_PER_IMAGE[1] + 1)):
        for _attempt in range(30):
            r = rng.uniform(MIN_RADIUS, max(MIN_RADIUS + 1, MAX_RADIUS_FRACTION * min(h, w)))
            cy, cx = rng.uniform(r + 1, h - r - 1), rng.uniform(r + 1, w - r - 1)
            # Disjoint circumcircles: no object hides part of another.
            if all(np.hypot(cy - py, cx - px) >= r + pr + 2 for py, px, pr in placed):
                break
        else:
            continue
        placed.append((cy, cx, r))
        cat = CATEGORIES[rng.integers(len(CATEGORIES))]
        # rounded before rasterising: the stored polygon is exactly the one painted and counted
        poly = np.round(_outline(rng, cat['outline'], cy, cx, r), 2)
        rle = mask_utils.merge(mask_utils.frPyObjects([poly.ravel().tolist()], h, w))
        mask = mask_utils.decode(rle).astype(bool)
        area = int(mask_utils.area(rle))
        if area < 64:
            continue
        img[mask] = _shape_pixels(rng, cat, yy, xx, cy, cx, r)[mask]
        x0, y0 = poly.min(axis=0)
        x1, y1 = poly.max(axis=0)
        objects.append(dict(category_id=cat['id'], segmentation=[poly.ravel().tolist()], area=area,
                            bbox=[round(float(v), 2) for v in (x0, y0, x1 - x0, y1 - y0)], iscrowd=0))

    # Global photometric jitter and sensor noise, over objects and background alike.
    contrast, brightness = rng.uniform(0.85, 1.15), rng.uniform(-0.06, 0.06)
    img = (img - 0.5) * contrast + 0.5 + brightness
    img += rng.normal(0, 0.025, size=img.shape).astype(np.float32)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), objects


def _outline(rng: np.random.Generator, kind: str, cy: float, cx: float, r: float) -> np.ndarray:
    """Polygon (N, 2) as (x, y), inside the circle of radius ``r`` around (cx, cy), randomly rotated."""
    if kind == 'ellipse':
        t = np.linspace(0, 2 * np.pi, ELLIPSE_VERTICES, endpoint=False)
        a, b = r, r * rng.uniform(0.6, 1.0)
        u, v = a * np.cos(t), b * np.sin(t)
    elif kind == 'rectangle':
        half = np.radians(rng.uniform(25, 65))  # angle of the diagonal: the aspect ratio
        a, b = r * np.cos(half), r * np.sin(half)
        u, v = np.array([-a, a, a, -a]), np.array([-b, -b, b, b])
    elif kind == 'triangle':
        t = np.array([0, 2 * np.pi / 3, 4 * np.pi / 3]) + rng.uniform(-0.3, 0.3, size=3)
        u, v = r * np.cos(t), r * np.sin(t)
    elif kind == 'hexagon':
        t = np.arange(6) * np.pi / 3
        u, v = r * np.cos(t), r * rng.uniform(0.75, 1.0) * np.sin(t)
    else:
        raise ValueError(f'unknown outline {kind!r}')
    rot = rng.uniform(0, 2 * np.pi)
    x = cx + u * np.cos(rot) - v * np.sin(rot)
    y = cy + u * np.sin(rot) + v * np.cos(rot)
    return np.stack([x, y], axis=-1)
