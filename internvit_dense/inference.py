"""Running a trained model over a user's images and writing what it predicts (tools/infer.py).

Not mmseg's ``MMSegInferencer`` / mmdet's ``DetInferencer``: they build the model themselves from a
config and weights (so not through ``apis.init_model``, which reads our checkpoints strictly), and
mmseg's resizes all class scores to the full image before the argmax (150 x 4000 x 3000 fp32 = 7 GB
for one photo); :func:`segment` takes the argmax in class chunks instead, with identical labels.
"""
import contextlib
import json
import os
import os.path as osp
from collections import Counter
from typing import List, Tuple

import numpy as np
import torch
import torch.nn.functional as F

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff')
# class scores resized to the image at once, at most (elements; fp32): 512 MiB whatever the image size
CHUNK_ELEMENTS = 1 << 27


class UnreadableImage(ValueError):
    """An input file that is not a readable image."""


class OutputWriteError(OSError):
    """A prediction could not be written (full disk, no permission); nothing was left under its name."""


@contextlib.contextmanager
def written_atomically(path: str):
    """Yields a temporary name beside ``path`` (same extension, same file system) to write to, renamed to
    ``path`` once written: a full disk leaves no truncated ``_overlay.png``. Raises OutputWriteError naming
    the file and the free space."""
    from internvit_dense.engine.fileio import TEMP_MARK, free_space
    folder = osp.dirname(osp.abspath(path))
    temp = osp.join(folder, f'{TEMP_MARK}{os.getpid()}-{osp.basename(path)}')
    try:
        yield temp
        os.replace(temp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.remove(temp)
        error = OutputWriteError(f'could not write {path}: {e.strerror or e}; {free_space(folder)} free in {folder}; '
                                 'nothing was left under that name')
        error.errno = e.errno
        raise error from e


def find_images(inputs: List[str]) -> List[str]:
    """The image files among ``inputs`` (files, or folders searched recursively). Raises FileNotFoundError."""
    images, missing = [], []
    for item in inputs:
        if osp.isdir(item):
            images += sorted(osp.join(d, f) for d, _, files in os.walk(item) for f in files
                             if f.lower().endswith(IMAGE_SUFFIXES))
        elif osp.isfile(item):
            images.append(item)
        else:
            missing.append(item)
    if missing:
        raise FileNotFoundError(f'not found: {", ".join(missing)}')
    if not images:
        raise FileNotFoundError(f'no images ({"/".join(IMAGE_SUFFIXES)}) in {", ".join(inputs)}')
    return images


def output_stems(images: List[str]) -> List[str]:
    """File names for the outputs: the image's name, made unique when two folders hold the same one."""
    seen, stems = Counter(), []
    for path in images:
        stem = osp.splitext(osp.basename(path))[0]
        seen[stem] += 1
        stems.append(stem if seen[stem] == 1 else f'{stem}_{seen[stem]}')
    return stems


def read_image(path: str) -> np.ndarray:
    """The image as a BGR array (what the models take). Raises UnreadableImage naming the file."""
    import mmcv
    if osp.getsize(path) == 0:
        raise UnreadableImage(f'{path} is empty (0 bytes): not an image')
    try:
        bgr = mmcv.imread(path)
    except Exception as e:  # OpenCV's decoding errors name no file
        raise UnreadableImage(f'{path} is not an image that can be read ({type(e).__name__}: {e})') from None
    if bgr is None:
        raise UnreadableImage(f'{path} is not an image that can be read')
    return bgr


def resize_argmax(logits: torch.Tensor, size: Tuple[int, int], align_corners: bool,
                  chunk_elements: int = CHUNK_ELEMENTS) -> torch.Tensor:
    """``F.interpolate(logits[None], size, bilinear).argmax(0)`` without the (C, H, W) tensor: classes in
    chunks, a running maximum kept. Each class is interpolated on its own, so the labels are identical
    (ties go to the lower class index, as argmax's)."""
    num_classes = logits.shape[0]
    step = max(1, chunk_elements // (size[0] * size[1]))
    best = labels = None
    for c0 in range(0, num_classes, step):
        scores = F.interpolate(logits[None, c0:c0 + step], size=size, mode='bilinear',
                               align_corners=align_corners)[0]
        value, index = scores.max(0)
        del scores
        if best is None:
            best, labels = value, index
        else:
            better = value > best
            torch.maximum(best, value, out=best)
            labels[better] = index[better] + c0
    return labels


@torch.no_grad()
def segment(model, bgr: np.ndarray):
    """What ``mmseg.apis.inference_model`` returns, ``pred_sem_seg`` only, in bounded memory: the scores
    stay at the model's resolution and are resized to the image in class chunks (:func:`resize_argmax`)."""
    from mmengine.structures import PixelData
    from mmseg.apis.inference import _preprare_data  # mmseg's own test-pipeline preparation (sic)
    data, _ = _preprare_data(bgr, model)
    data = model.data_preprocessor(data, False)
    sample = data['data_samples'][0]
    meta = sample.metainfo
    logits = model.inference(data['inputs'], [meta])[0]
    # as EncoderDecoder.postprocess_result: drop the padding, undo a flip
    left, right, top, bottom = meta.get('img_padding_size', meta.get('padding_size', [0, 0, 0, 0]))
    logits = logits[:, top:logits.shape[1] - bottom, left:logits.shape[2] - right]
    if meta.get('flip'):
        logits = logits.flip(dims=(2, ) if meta['flip_direction'] == 'horizontal' else (1, ))
    size = tuple(meta['ori_shape'][:2])
    if logits.shape[0] > 1:
        labels = resize_argmax(logits, size, model.align_corners)
    else:  # one output channel: a binary mask by the head's threshold
        scores = F.interpolate(logits[None], size=size, mode='bilinear', align_corners=model.align_corners)[0]
        labels = (scores.sigmoid() > model.decode_head.threshold).long()[0]
    sample.pred_sem_seg = PixelData(data=labels[None])
    return sample


class Segmentation:
    """Writes ``<stem>_labels.png`` (class index per pixel, 255 where nothing is predicted) and
    ``<stem>_overlay.png``; counts pixels per class."""

    def __init__(self, model, opacity: float):
        from mmseg.visualization import SegLocalVisualizer
        self.model = model
        self.classes = model.dataset_meta['classes']
        self.visualizer = SegLocalVisualizer(name='infer_seg', alpha=opacity)
        self.visualizer.dataset_meta = model.dataset_meta
        self.pixels = Counter()

    def __call__(self, path, bgr, rgb, out_dir, stem):
        from PIL import Image
        result = segment(self.model, bgr)
        labels = result.pred_sem_seg.data[0].cpu().numpy()
        # the overlay first: mmseg's drawing fails on some images (1x1), and a skipped image leaves no output
        with written_atomically(osp.join(out_dir, f'{stem}_overlay.png')) as temp:
            self.visualizer.add_datasample(stem, rgb, data_sample=result, draw_gt=False, show=False, out_file=temp)
        with written_atomically(osp.join(out_dir, f'{stem}_labels.png')) as temp:
            Image.fromarray(np.where(labels < 255, labels, 255).astype(np.uint8)).save(temp, format='PNG')
        counts = Counter(dict(zip(*np.unique(labels, return_counts=True))))
        self.pixels.update(counts)
        top = ', '.join(f'{self.name(c)} {n / labels.size:.0%}' for c, n in counts.most_common(3))
        return f'{labels.shape[1]}x{labels.shape[0]}: {top}'

    def name(self, c):
        return self.classes[c].strip() if c < len(self.classes) else f'class {c}'

    def summary(self):
        total = sum(self.pixels.values())
        top = ', '.join(f'{self.name(c)} {n / total:.1%}' for c, n in self.pixels.most_common(8))
        return f'classes by share of all predicted pixels: {top}'


class Detection:
    """Writes ``<stem>.json`` (every box: class, score, [x1, y1, x2, y2]) and ``<stem>_overlay.png``
    (boxes and masks scoring at least ``score_thr``); counts kept detections per class."""

    def __init__(self, model, score_thr: float):
        from mmdet.apis import inference_detector
        from mmdet.visualization import DetLocalVisualizer
        self.infer = inference_detector
        self.model = model
        self.score_thr = score_thr
        self.classes = model.dataset_meta['classes']
        self.visualizer = DetLocalVisualizer(name='infer_det')
        self.visualizer.dataset_meta = model.dataset_meta
        self.kept = Counter()

    def __call__(self, path, bgr, rgb, out_dir, stem):
        result = self.infer(self.model, bgr)
        pred = result.pred_instances
        boxes = [dict(label=self.classes[int(c)], score=round(float(s), 4), bbox=[round(float(v), 1) for v in b])
                 for c, s, b in zip(pred.labels, pred.scores, pred.bboxes)]
        with written_atomically(osp.join(out_dir, f'{stem}.json')) as temp, open(temp, 'w') as f:
            json.dump(dict(image=osp.abspath(path), detections=boxes), f, indent=1)
        with written_atomically(osp.join(out_dir, f'{stem}_overlay.png')) as temp:
            self.visualizer.add_datasample(stem, rgb, data_sample=result, draw_gt=False, show=False,
                                           pred_score_thr=self.score_thr, out_file=temp)
        kept = Counter(b['label'] for b in boxes if b['score'] >= self.score_thr)
        self.kept.update(kept)
        listed = ', '.join(f'{n} {c}' for c, n in kept.most_common(3)) or 'none'
        return f'{sum(kept.values())} of {len(boxes)} detections at score >= {self.score_thr}: {listed}'

    def summary(self):
        listed = ', '.join(f'{n} {c}' for c, n in self.kept.most_common(8)) or 'none'
        return f'detections at score >= {self.score_thr}: {listed}'


class Depth:
    """Writes ``<stem>_depth.png`` (16-bit: metres x ``scale``, 0 = none; ``scale`` 1000 as NYU's PNGs, or 256 as
    KITTI's where the head's range passes 65.535 m) and ``<stem>_depth_color.png`` (the image, the depth coloured
    near-yellow to far-purple, and the colour scale in metres); reports each image's depth range."""

    def __init__(self, model):
        from mmseg.apis import inference_model
        self.infer = inference_model
        self.model = model
        head = model.decode_head
        self.min_depth, self.max_depth = float(head.min_depth), float(head.max_depth)
        self.scale = 1000.0 if self.max_depth * 1000 <= 65535 else 256.0
        self.ranges = []

    def __call__(self, path, bgr, rgb, out_dir, stem):
        import cv2

        from internvit_dense.models.depth.visualization import depth_panel
        result = self.infer(self.model, bgr)
        depth = result.pred_depth_map.data[0].float().cpu().numpy()
        cv2.imwrite(osp.join(out_dir, f'{stem}_depth.png'),
                    np.clip(np.round(depth * self.scale), 0, 65535).astype(np.uint16))
        panel = depth_panel(rgb, [depth], (self.min_depth, self.max_depth))
        cv2.imwrite(osp.join(out_dir, f'{stem}_depth_color.png'), panel[..., ::-1])
        self.ranges.append((float(depth.min()), float(depth.max())))
        return f'{depth.shape[1]}x{depth.shape[0]}: depth {depth.min():.2f}..{depth.max():.2f} m'

    def summary(self):
        lo, hi = min(r[0] for r in self.ranges), max(r[1] for r in self.ranges)
        return (f'depth {lo:.2f}..{hi:.2f} m over all images; <stem>_depth.png holds metres x {self.scale:g} '
                '(uint16), <stem>_depth_color.png the image beside the coloured depth')


def task_for(model, opacity: float = 0.5, score_thr: float = 0.3):
    """The writer for the model's task: detection for mmdet configs, depth for depth heads, else segmentation."""
    if model.cfg.get('default_scope') == 'mmdet':
        return Detection(model, score_thr)
    if hasattr(model.decode_head, 'max_depth'):
        return Depth(model)
    return Segmentation(model, opacity)


def predict_images(task, images: List[str], out_dir: str, progress: bool = True) -> List[str]:
    """Runs ``task`` over ``images`` into ``out_dir``, a line per image. An image that cannot be read,
    predicted or drawn (not an image, too small for the model, 1x1 for mmseg's drawing) is named, skipped, and returned with the reason at
    the end; a failed write (OutputWriteError: a full disk fails every later one too) stops the run."""
    import mmcv
    from tqdm import tqdm
    os.makedirs(out_dir, exist_ok=True)
    skipped = []
    bar = tqdm(list(zip(images, output_stems(images))), unit='img', disable=not progress, dynamic_ncols=True)
    for image, stem in bar:
        try:
            bgr = read_image(image)  # read once: the models take BGR arrays (their preprocessors swap to RGB)
            line = task(image, bgr, mmcv.bgr2rgb(bgr), out_dir, stem)
        except OutputWriteError:
            raise
        except UnreadableImage as e:
            skipped.append(str(e))
            tqdm.write(f'  skipped: {e}')
            continue
        except (ValueError, IndexError, RuntimeError, TypeError) as e:  # the model's errors name no file
            h, w = bgr.shape[:2]
            skipped.append(f'{image} ({w}x{h}) could not be predicted or drawn: {e}')
            tqdm.write(f'  skipped: {skipped[-1]}')
            continue
        tqdm.write(f'  {image}: {line}')
    return skipped
