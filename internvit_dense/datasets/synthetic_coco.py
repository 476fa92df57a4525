"""A small synthetic instance-segmentation set in COCO's on-disk layout and JSON format.

It exists so that the whole detection path (mmdet's ``CocoDataset``, the pipeline,
a tiny InternViT, Mask R-CNN and ``CocoMetric``) can be exercised end to end on a CPU
in minutes, on a task that is actually learnable, so a rising AP means something::

    <root>/annotations/instances_train2017.json
    <root>/annotations/instances_val2017.json
    <root>/annotations/panoptic_train2017.json     (COCO panoptic format: things and stuff)
    <root>/annotations/panoptic_train2017/000000000001.png ...
    <root>/annotations/panoptic_val2017.json, panoptic_val2017/
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

The panoptic layout labels every pixel of the same images. The background is split
into stuff regions (COCO's ``isthing=0``): the cluttered grey ``wall``, and in some
images a smooth pale-blue ``sky`` band above it and a brown planked ``floor`` below
it, each with a slightly tilted, wavy edge. The things are the instance annotations'
objects, their segments exactly the pixels of their rasterised polygons. The PNGs
use COCO's RGB encoding of segment ids (panopticapi's ``id2rgb``): object ``k`` of an
image (its instance annotation ``image_id * 100 + k``) is segment ``k + 1``, a stuff
region is segment ``100 + category_id``. No pixel is VOID. The stuff is drawn from
its own random stream, so the objects (where, which, what shape) do not depend on it.
"""
import colorsys
import json
import os
import time
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
from PIL import Image

from panopticapi.utils import id2rgb

from .synthetic_ade20k import _background, _shape_pixels
from .synthetic_root import prepare_root, progress_bar, read_completion_marker, write_completion_marker

# id -> appearance. Hues in degrees; shape is the polygon outline.
CATEGORIES: Tuple[dict, ...] = (
    dict(id=1, name='ball', supercategory='shape', outline='ellipse', hue=0, texture='solid', color=[220, 20, 60]),
    dict(id=2, name='crate', supercategory='shape', outline='rectangle', hue=220, texture='stripes',
         color=[30, 80, 220]),
    dict(id=3, name='cone', supercategory='shape', outline='triangle', hue=120, texture='solid', color=[20, 160, 60]),
    dict(id=4, name='gem', supercategory='shape', outline='hexagon', hue=50, texture='dots', color=[230, 200, 20]),
)
CLASS_NAMES: Tuple[str, ...] = tuple(c['name'] for c in CATEGORIES)
COCO_CATEGORY_KEYS = ('id', 'name', 'supercategory')

# Stuff (panoptic only), after the things as in COCO panoptic, so that mmdet's contiguous labels put the things
# first. Colours (here and above) are the panoptic JSON's (panopticapi's IdGenerator reads them), not the images'.
STUFF_CATEGORIES: Tuple[dict, ...] = (
    dict(id=5, name='sky', supercategory='background', isthing=0, color=[70, 130, 180]),
    dict(id=6, name='wall', supercategory='background', isthing=0, color=[140, 140, 140]),
    dict(id=7, name='floor', supercategory='background', isthing=0, color=[150, 100, 60]),
)
STUFF_NAMES: Tuple[str, ...] = tuple(c['name'] for c in STUFF_CATEGORIES)
SKY, WALL, FLOOR = (c['id'] for c in STUFF_CATEGORIES)
PANOPTIC_CLASSES: Tuple[str, ...] = CLASS_NAMES + STUFF_NAMES
STUFF_SEGMENT_ID_BASE = 100  # a stuff region's segment id is 100 + category_id; object k's is k + 1
SKY_PROBABILITY, FLOOR_PROBABILITY = 0.5, 0.7

# split name -> (image folder, annotation file, first image id). Ids are unique across
# the splits, as in COCO, and image i of a split keeps its id whatever the split's size.
SPLITS: Dict[str, Tuple[str, str, int]] = {
    'train': ('train2017', 'annotations/instances_train2017.json', 1),
    'val': ('val2017', 'annotations/instances_val2017.json', 1_000_001),
}
# split name -> (panoptic JSON, folder of its PNGs), beside the instance annotations as in COCO.
PANOPTIC: Dict[str, Tuple[str, str]] = {
    'train': ('annotations/panoptic_train2017.json', 'annotations/panoptic_train2017'),
    'val': ('annotations/panoptic_val2017.json', 'annotations/panoptic_val2017'),
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
                 generated=[p for folder, ann_file, _ in SPLITS.values() for p in (folder, ann_file)] +
                 [p for paths in PANOPTIC.values() for p in paths])
    os.makedirs(os.path.join(root, 'annotations'), exist_ok=True)

    start = time.time()
    records = {}
    jobs = []
    for split_id, (split, n) in enumerate(zip(SPLITS, (num_train, num_val))):
        img_dir = os.path.join(root, SPLITS[split][0])
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(os.path.join(root, PANOPTIC[split][1]), exist_ok=True)
        records[split] = dict(images=[], annotations=[], panoptic=[])
        jobs += [(split_id, split, i) for i in range(n)]

    for split_id, split, i in progress_bar(jobs, progress, desc=f'synthetic COCO -> {root}'):
        rng = np.random.default_rng(np.random.SeedSequence([seed, split_id, i]))
        stuff_rng = np.random.default_rng(np.random.SeedSequence([seed, split_id, i, 1]))
        image, objects, segment_map, segments = render_sample(rng, lo, hi, stuff_rng)
        image_id = SPLITS[split][2] + i
        file_name = f'{image_id:012d}.jpg'
        Image.fromarray(image).save(os.path.join(root, SPLITS[split][0], file_name), quality=JPEG_QUALITY)
        png_name = file_name.replace('.jpg', '.png')
        Image.fromarray(id2rgb(segment_map)).save(os.path.join(root, PANOPTIC[split][1], png_name))
        records[split]['panoptic'].append(dict(image_id=image_id, file_name=png_name, segments_info=segments))
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
        panoptic = dict(coco, annotations=records[split]['panoptic'],
                        categories=[dict({k: c[k] for k in COCO_CATEGORY_KEYS}, isthing=1, color=c['color'])
                                    for c in CATEGORIES] + [dict(c) for c in STUFF_CATEGORIES])
        with open(os.path.join(root, PANOPTIC[split][0]), 'w') as f:
            json.dump(panoptic, f)
        per_cat = {c['name']: 0 for c in CATEGORIES}
        for ann in records[split]['annotations']:
            per_cat[CLASS_NAMES[ann['category_id'] - 1]] += 1
        counts[split] = per_cat
        paths[split] = dict(img_dir=os.path.join(root, img_folder), ann_file=os.path.join(root, ann_file),
                            images=len(records[split]['images']), objects=len(records[split]['annotations']),
                            panoptic_ann_file=os.path.join(root, PANOPTIC[split][0]),
                            panoptic_seg_dir=os.path.join(root, PANOPTIC[split][1]))

    summary = dict(root=root, num_train=num_train, num_val=num_val, seed=seed, size=[lo, hi],
                   classes=list(CLASS_NAMES), stuff_classes=list(STUFF_NAMES), objects_per_class=counts, paths=paths,
                   seconds=round(time.time() - start, 3))
    write_completion_marker(root, summary)
    return summary


def describe(s: dict) -> str:
    """What :func:`generate_synthetic_coco` wrote, for people: splits, annotation files, categories."""
    lines = [f"wrote {s['num_train']} training + {s['num_val']} validation images to {s['root']} "
             f"in {s['seconds']:.1f} s (seed {s['seed']})"]
    for split, info in s['paths'].items():
        lines.append(f"  {split:<5} {info['images']:>5} images {info['objects']:>6} objects  {info['ann_file']}")
        lines.append(f"  {'':<5} panoptic (things + stuff)    {info['panoptic_ann_file']}")
    lines.append('categories (COCO id: name, appearance, training objects):')
    for c in CATEGORIES:
        look = f"{c['texture']} {c['outline']}, hue {c['hue']}"
        lines.append(f"  {c['id']}: {c['name']:<6} {look:<28} {s['objects_per_class']['train'][c['name']]:>6}")
    stuff = ', '.join(f"{c['id']}: {c['name']}" for c in STUFF_CATEGORIES)
    lines.append(f'stuff, panoptic only (COCO id: name): {stuff}')
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
        panoptic_json, png_dir = (os.path.join(root, p) for p in PANOPTIC[split])
        if not os.path.isfile(panoptic_json) or not os.path.isdir(png_dir):
            return False
        if sum(f.endswith('.png') for f in os.listdir(png_dir)) != summary['paths'][split]['images']:
            return False
    return True


def read_summary(root: str) -> Optional[dict]:
    """The summary a finished run stored, or None if there is no (readable) marker."""
    return read_completion_marker(root)


# --------------------------------------------------------------------- rendering


def render_sample(rng: np.random.Generator, lo: int, hi: int,
                  stuff_rng: np.random.Generator) -> Tuple[np.ndarray, List[dict], np.ndarray, List[dict]]:
    """One HxWx3 uint8 image, its objects as COCO annotation fields (without ids), its panoptic segment-id map
    (HxW uint32) and that map's ``segments_info``. ``stuff_rng`` draws the stuff regions and only them."""
    from pycocotools import mask as mask_utils

    h, w = (int(v) for v in rng.integers(lo, hi + 1, size=2))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = _background(rng, h, w, yy, xx)
    stuff = _paint_stuff(stuff_rng, img, yy, xx)  # HxW category ids; wall where nothing else is drawn
    segment_map = (STUFF_SEGMENT_ID_BASE + stuff).astype(np.uint32)

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
        segment_map[mask] = len(objects) + 1  # object k (annotation image_id * 100 + k) is segment k + 1
        x0, y0 = poly.min(axis=0)
        x1, y1 = poly.max(axis=0)
        objects.append(dict(category_id=cat['id'], segmentation=[poly.ravel().tolist()], area=area,
                            bbox=[round(float(v), 2) for v in (x0, y0, x1 - x0, y1 - y0)], iscrowd=0))

    # Global photometric jitter and sensor noise, over objects and background alike.
    contrast, brightness = rng.uniform(0.85, 1.15), rng.uniform(-0.06, 0.06)
    img = (img - 0.5) * contrast + 0.5 + brightness
    img += rng.normal(0, 0.025, size=img.shape).astype(np.float32)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), objects, segment_map, _segments_info(segment_map, objects)


def _segments_info(segment_map: np.ndarray, objects: List[dict]) -> List[dict]:
    """COCO panoptic ``segments_info`` of a segment-id map: area and box counted from its pixels."""
    segments = []
    for segment_id in np.unique(segment_map).tolist():
        if segment_id > STUFF_SEGMENT_ID_BASE:
            category_id = segment_id - STUFF_SEGMENT_ID_BASE
        else:
            category_id = objects[segment_id - 1]['category_id']
        ys, xs = np.nonzero(segment_map == segment_id)
        x0, y0 = int(xs.min()), int(ys.min())
        segments.append(dict(id=segment_id, category_id=category_id, iscrowd=0, area=int(len(ys)),
                             bbox=[x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1]))
    return segments


def _paint_stuff(rng: np.random.Generator, img: np.ndarray, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Paints a sky band above and a floor below the wall (each in some images) into ``img``; returns the
    category id of every pixel. Edges are tilted and wavy, so no fixed row says where a region ends."""
    h, w = yy.shape
    stuff = np.full((h, w), WALL, dtype=np.int64)

    def edge(fraction):  # row of the boundary at each column
        tilt = rng.uniform(-0.15, 0.15) * (xx - w / 2)
        wave = rng.uniform(0, 3) * np.sin(xx / rng.uniform(8, 20) + rng.uniform(0, 2 * np.pi))
        return fraction * h + tilt + wave

    if rng.uniform() < SKY_PROBABILITY:
        sky = yy < edge(rng.uniform(0.15, 0.35))
        # Smooth, pale blue, brighter towards the horizon: no clutter, no texture.
        hue, sat, val = rng.uniform(195, 215) / 360, rng.uniform(0.3, 0.5), rng.uniform(0.7, 0.85)
        colour = np.array(colorsys.hsv_to_rgb(hue, sat, val), dtype=np.float32)
        field = colour * (1 + 0.15 * yy[..., None] / h) + 0.02 * rng.normal(size=3).astype(np.float32)
        img[sky] = field[sky]
        stuff[sky] = SKY
    if rng.uniform() < FLOOR_PROBABILITY:
        top = edge(rng.uniform(0.6, 0.85))
        floor = yy >= top
        # Brown planks: boards a few pixels deep, narrowing towards the horizon, dark seams between them.
        hue, sat, val = rng.uniform(20, 35) / 360, rng.uniform(0.35, 0.55), rng.uniform(0.4, 0.6)
        colour = np.array(colorsys.hsv_to_rgb(hue, sat, val), dtype=np.float32)
        depth = np.maximum(yy - top, 0)
        board = np.floor(np.sqrt(depth * rng.uniform(6, 10)))
        field = colour * (1 + 0.12 * ((board % 2) - 0.5))[..., None]
        seam = np.diff(board, axis=0, prepend=board[:1]) > 0
        field[seam] *= 0.55
        img[floor] = field[floor]
        stuff[floor] = FLOOR
    return stuff


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
