"""Runs a trained model on your own images and draws what it predicts.

    python tools/infer.py CONFIG CHECKPOINT IMAGE_OR_FOLDER [...] [--out-dir work_dirs/infer] [--device cuda:0]

Segmentation configs write, per image, ``<name>_overlay.png`` (the prediction over the image) and
``<name>_labels.png`` (class index per pixel, as the data set counts classes; 255 where nothing is
predicted). Detection configs write ``<name>_overlay.png`` (boxes and masks scoring at least
``--score-thr``) and ``<name>.json`` (every box: class, score, [x1, y1, x2, y2]).
"""
import argparse
import json
import os
import os.path as osp
import sys
import time
from collections import Counter

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout without install

from internvit_dense.engine.launch import allow_full_checkpoint_loading, keep_freed_memory_on_cpu  # noqa: E402

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff')


def parse_args(argv=None):
    from mmengine.config import DictAction
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('config')
    p.add_argument('checkpoint', help='a training checkpoint or a state dict (tools/zero_to_fp32.py for DeepSpeed)')
    p.add_argument('inputs', nargs='+', help='images, or folders of images (searched recursively)')
    p.add_argument('--out-dir', default='work_dirs/infer', help='(default: %(default)s)')
    p.add_argument('--device', default=None, help='default: cuda:0 if available, else cpu')
    p.add_argument('--opacity', type=float, default=0.5, help='of the segmentation overlay (default: %(default)s)')
    p.add_argument('--score-thr', type=float, default=0.3,
                   help='detections drawn and counted from this score (default: %(default)s)')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config entries')
    p.add_argument('--quiet', action='store_true', help='no progress bar')
    return p.parse_args(argv)


def find_images(inputs):
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
        raise SystemExit(f'not found: {", ".join(missing)}')
    if not images:
        raise SystemExit(f'no images ({"/".join(IMAGE_SUFFIXES)}) in {", ".join(inputs)}')
    return images


def output_stems(images):
    """File names for the outputs: the image's name, made unique when two folders hold the same one."""
    seen, stems = Counter(), []
    for path in images:
        stem = osp.splitext(osp.basename(path))[0]
        seen[stem] += 1
        stems.append(stem if seen[stem] == 1 else f'{stem}_{seen[stem]}')
    return stems


class Segmentation:
    def __init__(self, model, opacity):
        from mmseg.apis import inference_model
        from mmseg.visualization import SegLocalVisualizer
        self.infer = inference_model
        self.model = model
        self.classes = model.dataset_meta['classes']
        self.visualizer = SegLocalVisualizer(name='infer_seg', alpha=opacity)
        self.visualizer.dataset_meta = model.dataset_meta
        self.pixels = Counter()

    def __call__(self, path, bgr, rgb, out_dir, stem):
        import numpy as np
        from PIL import Image
        result = self.infer(self.model, bgr)
        labels = result.pred_sem_seg.data[0].cpu().numpy()
        Image.fromarray(np.where(labels < 255, labels, 255).astype(np.uint8)).save(
            osp.join(out_dir, f'{stem}_labels.png'))
        self.visualizer.add_datasample(stem, rgb, data_sample=result, draw_gt=False, show=False,
                                       out_file=osp.join(out_dir, f'{stem}_overlay.png'))
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
    def __init__(self, model, score_thr):
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
        with open(osp.join(out_dir, f'{stem}.json'), 'w') as f:
            json.dump(dict(image=osp.abspath(path), detections=boxes), f, indent=1)
        self.visualizer.add_datasample(stem, rgb, data_sample=result, draw_gt=False, show=False,
                                       pred_score_thr=self.score_thr, out_file=osp.join(out_dir, f'{stem}_overlay.png'))
        kept = Counter(b['label'] for b in boxes if b['score'] >= self.score_thr)
        self.kept.update(kept)
        listed = ', '.join(f'{n} {c}' for c, n in kept.most_common(3)) or 'none'
        return f'{sum(kept.values())} of {len(boxes)} detections at score >= {self.score_thr}: {listed}'

    def summary(self):
        listed = ', '.join(f'{n} {c}' for c, n in self.kept.most_common(8)) or 'none'
        return f'detections at score >= {self.score_thr}: {listed}'


def main(argv=None):
    args = parse_args(argv)
    allow_full_checkpoint_loading()
    keep_freed_memory_on_cpu()
    images = find_images(args.inputs)
    if not osp.isfile(args.config):
        raise SystemExit(f'config file not found: {args.config}')

    import mmcv
    import torch
    from tqdm import tqdm

    from internvit_dense.apis import init_model
    device = args.device or ('cuda:0' if torch.cuda.is_available() else 'cpu')
    t0 = time.perf_counter()
    try:
        model = init_model(args.config, args.checkpoint, device=device, cfg_options=args.cfg_options)
    except (OSError, RuntimeError, TypeError, ValueError) as e:
        raise SystemExit(str(e)) from None
    task = (Detection(model, args.score_thr) if model.cfg.get('default_scope') == 'mmdet'
            else Segmentation(model, args.opacity))
    print(f'{args.config} with {args.checkpoint} on {device} ({time.perf_counter() - t0:.1f}s); '
          f'{len(images)} images -> {osp.abspath(args.out_dir)}', flush=True)

    os.makedirs(args.out_dir, exist_ok=True)
    t0 = time.perf_counter()
    bar = tqdm(list(zip(images, output_stems(images))), unit='img', disable=args.quiet, dynamic_ncols=True)
    for image, stem in bar:
        bgr = mmcv.imread(image)  # read once: the models take BGR arrays (their preprocessors swap to RGB)
        if bgr is None:
            raise SystemExit(f'{image} is not an image that can be read')
        tqdm.write(f'  {image}: {task(image, bgr, mmcv.bgr2rgb(bgr), args.out_dir, stem)}')
    seconds = time.perf_counter() - t0

    print(f'done: {len(images)} images in {seconds:.1f}s ({seconds / len(images):.2f}s each)')
    print(f'  {task.summary()}')
    print(f'  overlays and predictions: {osp.abspath(args.out_dir)}')


if __name__ == '__main__':
    main()
