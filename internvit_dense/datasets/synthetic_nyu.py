"""A small synthetic depth set in NYU-Depth v2's on-disk layout (mmseg's ``NYUDataset``).

It exists so that the whole depth path (``NYUDataset``, ``LoadDepthAnnotation``, a tiny backbone, a
depth head, the metric) runs end to end on a CPU in minutes, on a task whose depth can be learned
from the image, so that beating the constant predictor means something::

    <root>/images/train/bedroom_00001.jpg
    <root>/annotations/train/bedroom_00001.png   (uint16, millimetres: NYU's 16-bit PNG, scale 1000)
    <root>/images/test/kitchen_00001.jpg
    <root>/annotations/test/kitchen_00001.png
    <root>/.synthetic_nyu  (written first; marks the folder as ours)
    <root>/.complete       (written last; JSON summary)

Each image is a pinhole camera's view into a box-shaped room: floor, ceiling, two side walls and a back
wall, with 1-4 boxes standing on the floor in front of the back wall. The depth (z, metres, as NYU's)
of every pixel is the nearest of those surfaces along its ray, so it is geometry, and the image carries
that geometry through three cues a network can read:

* perspective: floor and ceiling depth falls off as ``f * height / (row - horizon)``; a box's depth is
  that of the floor where it stands, and nearer boxes occlude farther ones;
* texture scale: every surface carries a pattern of fixed size in the world (floor tiles 0.5 m, wall
  panels, box stripes 0.12 m), so its period in pixels is ``f * size / depth``;
* shading: a light at the camera, intensity ``1 / (1 + (depth / 3.5 m)^2)``, so farther is darker.

Room size, camera height, focal length, horizon (pitch), colours and boxes are drawn per image, and
sensor noise and a global photometric jitter are added, so neither a per-pixel lookup nor one fixed
depth map solves it. As in NYU, a few pixels have no depth (value 0, small "specular" blobs): every
loss and metric must skip them. Depth lies in about 1..9.6 m, inside NYU's 1e-3..10 m.
"""
import colorsys
import os
import time
from typing import Optional, Tuple

import numpy as np
from PIL import Image

from .synthetic_root import prepare_root, progress_bar, read_completion_marker, write_completion_marker

SPLITS = ('train', 'test')
OWNER_STAMP = '.synthetic_nyu'
JPEG_QUALITY = 92
DEPTH_SCALE = 1000  # NYU's 16-bit PNGs hold millimetres; mmseg's LoadDepthAnnotation(depth_rescale_factor=1e-3)
MAX_DEPTH = 10.0  # NYU's evaluation cap (metres)
LIGHT_FALLOFF = 3.5  # metres at which the camera light has half its intensity
# Scene names are NYU's (mmseg's NYUDataset.METAINFO): the data set takes the category from the name.
SCENES = ('bedroom', 'kitchen', 'living_room', 'bathroom', 'office', 'classroom')


def generate_synthetic_nyu(root: str,
                           num_train: int = 200,
                           num_test: int = 40,
                           size: Tuple[int, int] = (120, 160),
                           seed: int = 0,
                           progress: bool = True,
                           overwrite: bool = False) -> dict:
    """Writes the set under ``root`` and returns a summary (also stored in ``<root>/.complete``).

    Args:
        root: output directory; must be missing or empty unless ``overwrite``.
        num_train, num_test: images per split.
        size: (height, width) of every image; NYU's 480 x 640 has the same 3:4 shape as the default.
        seed: everything is a function of ``seed``; image ``i`` of a split does not depend on how many
            images the split has.
        progress: show a progress bar.
        overwrite: replace a previous set in ``root`` (only folders this generator writes, and only
            where its stamp is).
    """
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if min(h, w) < 32:
        raise ValueError(f'size must be at least 32 x 32 pixels, got {size!r}')
    if num_train < 0 or num_test < 0:
        raise ValueError('num_train and num_test must be >= 0')
    root = os.path.abspath(root)
    prepare_root(root, overwrite, dataset='NYU-Depth v2', owner_stamp=OWNER_STAMP,
                 generated=[f'{sub}/{split}' for sub in ('images', 'annotations') for split in SPLITS])

    start = time.time()
    jobs, paths = [], {}
    for split_id, (split, n) in enumerate(zip(SPLITS, (num_train, num_test))):
        img_dir, ann_dir = os.path.join(root, 'images', split), os.path.join(root, 'annotations', split)
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(ann_dir, exist_ok=True)
        paths[split] = dict(img_dir=img_dir, ann_dir=ann_dir, count=n)
        jobs += [(split_id, i, img_dir, ann_dir) for i in range(n)]

    train_depths = []
    for split_id, i, img_dir, ann_dir in progress_bar(jobs, progress, desc=f'synthetic NYU -> {root}'):
        rng = np.random.default_rng(np.random.SeedSequence([seed, split_id, i]))
        image, depth = render_sample(rng, h, w)
        stem = f'{SCENES[i % len(SCENES)]}_{i + 1:05d}'
        Image.fromarray(image).save(os.path.join(img_dir, stem + '.jpg'), quality=JPEG_QUALITY)
        Image.fromarray(depth_to_png(depth)).save(os.path.join(ann_dir, stem + '.png'))
        if split_id == 0:
            train_depths.append(np.round(depth[depth > 0] * DEPTH_SCALE) / DEPTH_SCALE)

    valid = np.concatenate(train_depths) if train_depths else np.zeros(0)
    summary = dict(
        root=root, num_train=num_train, num_test=num_test, seed=seed, size=[h, w],
        depth_scale=DEPTH_SCALE,
        # The best constant predictor of the tiny configs' baseline: the training set's median valid depth.
        train_median_depth=float(np.median(valid)) if valid.size else None,
        train_depth_range=[float(valid.min()), float(valid.max())] if valid.size else None,
        paths=paths, seconds=round(time.time() - start, 3))
    write_completion_marker(root, summary)
    return summary


def describe(s: dict) -> str:
    """What :func:`generate_synthetic_nyu` wrote, for people."""
    lines = [f"wrote {s['num_train']} training + {s['num_test']} test images ({s['size'][0]} x {s['size'][1]}) "
             f"to {s['root']} in {s['seconds']:.1f} s (seed {s['seed']})"]
    for split, info in s['paths'].items():
        lines.append(f"  {split:<6} {info['count']:>5}  {info['img_dir']}  {info['ann_dir']}")
    if s['train_depth_range']:
        lo, hi = s['train_depth_range']
        lines.append(f"training depth {lo:.2f}..{hi:.2f} m, median {s['train_median_depth']:.3f} m "
                     '(the constant baseline); 16-bit PNGs in millimetres, 0 = no depth')
    return '\n'.join(lines)


def read_summary(root: str) -> Optional[dict]:
    """The summary a finished run stored, or None if there is no (readable) marker."""
    return read_completion_marker(root)


def depth_to_png(depth: np.ndarray) -> np.ndarray:
    """Metres -> NYU's uint16 millimetres (0 stays 0: no depth)."""
    return np.clip(np.round(depth * DEPTH_SCALE), 0, 65535).astype(np.uint16)


# --------------------------------------------------------------------- rendering


def render_sample(rng: np.random.Generator, h: int, w: int) -> Tuple[np.ndarray, np.ndarray]:
    """One (H x W x 3 uint8 RGB image, H x W float32 depth in metres, 0 where invalid) pair."""
    # Camera: NYU's Kinect has f ~ 519 px at 640 wide, i.e. f ~ 0.81 w; drawn around that.
    f = w * rng.uniform(0.7, 0.95)
    cx = w / 2 + rng.uniform(-0.05, 0.05) * w
    cy = h / 2 + rng.uniform(-0.12, 0.12) * h  # horizon: the camera pitches a little
    cam_height = rng.uniform(1.0, 1.6)
    room_height = rng.uniform(2.5, 3.2)
    back = rng.uniform(4.5, 9.5)  # back wall's depth
    left, right = rng.uniform(1.5, 3.2), rng.uniform(1.5, 3.2)  # side walls' distance from the camera

    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    dx, dy = (xx - cx) / f, (yy - cy) / f  # ray (dx, dy, 1), y pointing down

    inf = np.inf
    with np.errstate(divide='ignore', invalid='ignore'):
        candidates = {
            'floor': np.where(dy > 0, cam_height / dy, inf),
            'ceiling': np.where(dy < 0, (room_height - cam_height) / -dy, inf),
            'left': np.where(dx < 0, left / -dx, inf),
            'right': np.where(dx > 0, right / dx, inf),
            'back': np.full((h, w), back),
        }
    names = list(candidates)
    stack = np.stack([candidates[n] for n in names])
    surface = stack.argmin(0)
    depth = stack.min(0)
    X, Y = dx * depth, dy * depth  # world coordinates (camera at the origin, floor at Y = cam_height)

    palette = _room_palette(rng)
    img = np.zeros((h, w, 3))
    for k, name in enumerate(names):
        m = surface == k
        if not m.any():
            continue
        u, v = {'floor': (X, depth), 'ceiling': (X, depth), 'left': (depth, Y), 'right': (depth, Y),
                'back': (X, Y)}[name]
        img[m] = _surface_texture(name, palette[name], u[m], v[m], rng)

    # Boxes standing on the floor, fronto-parallel faces: drawn far to near so that nearer ones occlude.
    boxes = []
    for _ in range(rng.integers(1, 5)):
        z = rng.uniform(1.6, back - 0.4)
        width, height = rng.uniform(0.4, 1.2), rng.uniform(0.4, 1.6)
        x0 = rng.uniform(-left, right - width)
        boxes.append((z, x0, width, height))
    for z, x0, width, height in sorted(boxes, reverse=True):
        bx, by = dx * z, dy * z  # where each ray crosses the plane at depth z
        face = (bx >= x0) & (bx <= x0 + width) & (by <= cam_height) & (by >= cam_height - height) & (z < depth)
        if not face.any():
            continue
        depth[face] = z
        img[face] = _box_texture(rng, bx[face] - x0, by[face])

    # The camera's light: farther is darker.
    img *= (1.0 / (1.0 + (depth / LIGHT_FALLOFF) ** 2))[..., None] * rng.uniform(1.4, 1.9)
    contrast, brightness = rng.uniform(0.9, 1.1), rng.uniform(-0.04, 0.04)
    img = (img - 0.5) * contrast + 0.5 + brightness + rng.normal(0, 0.02, size=img.shape)

    depth = depth.astype(np.float32)
    for _ in range(rng.integers(0, 4)):  # NYU-like holes: no depth measured there
        r = rng.uniform(1.5, 0.04 * min(h, w) + 2)
        depth[np.hypot(yy - rng.uniform(0, h), xx - rng.uniform(0, w)) <= r] = 0
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), depth


def _room_palette(rng):
    """A base colour per surface: walls share a hue, floor and ceiling differ."""
    wall_hue = rng.uniform()

    def colour(hue, sat, val):
        return np.array(colorsys.hsv_to_rgb(hue % 1, sat, val))

    return dict(floor=colour(rng.uniform(0.05, 0.12), rng.uniform(0.3, 0.6), rng.uniform(0.5, 0.8)),
                ceiling=colour(wall_hue, 0.05, rng.uniform(0.85, 1.0)),
                left=colour(wall_hue, rng.uniform(0.1, 0.35), rng.uniform(0.7, 0.9)),
                right=colour(wall_hue, rng.uniform(0.1, 0.35), rng.uniform(0.7, 0.9)),
                back=colour(wall_hue + 0.05, rng.uniform(0.1, 0.35), rng.uniform(0.65, 0.9)))


def _surface_texture(name, base, u, v, rng):
    """A pattern of fixed world size on a surface, in world coordinates (u, v) in metres."""
    if name == 'floor':  # 0.5 m tiles, alternately lighter and darker
        tile = (np.floor(u / 0.5) + np.floor(v / 0.5)) % 2
        shade = 0.75 + 0.25 * tile
    elif name == 'ceiling':  # 1.2 m panels with dark seams
        seam = (np.abs(((u / 1.2) % 1) - 0.5) > 0.46) | (np.abs(((v / 1.2) % 1) - 0.5) > 0.46)
        shade = np.where(seam, 0.6, 1.0)
    else:  # walls: 0.3 m vertical (or horizontal) panels with a soft profile
        shade = 0.85 + 0.15 * np.cos(2 * np.pi * u / 0.3)
    return base[None, :] * shade[:, None]


def _box_texture(rng, u, v):
    """A saturated box with 0.12 m stripes (world size), at a random angle."""
    colour = np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.5, 0.9), rng.uniform(0.6, 1.0)))
    t = rng.uniform(0, np.pi)
    s = u * np.cos(t) + v * np.sin(t)
    stripe = ((s / 0.12) % 1) < 0.5
    return colour[None, :] * np.where(stripe, 1.0, 0.55)[:, None]
