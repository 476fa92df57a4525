"""Depth data: KITTI's Eigen split, its benchmark crop, and the depth metric with the evaluation crops.

NYU-Depth v2 is mmseg's ``NYUDataset`` as it is (``images/{train,test}/*.jpg``, ``annotations/{train,test}/*.png``,
16-bit millimetres read by ``LoadDepthAnnotation(depth_rescale_factor=1e-3)``); what it lacks is here.

Evaluation as DINOv2's (the Monocular-Depth-Estimation-Toolbox's) and mmseg's ``DepthMetric``: per image, the
pixels whose ground truth lies in ``(min_depth_eval, max_depth_eval)`` and inside the crop count; predictions are
clipped to ``[min_depth_eval, max_depth_eval]``; the nine metrics are computed per image and then averaged over
the images (not pooled over all pixels: a pooled RMSE weighs large images more).
"""
import os.path as osp
from typing import List, Optional, Sequence

import mmengine.fileio as fileio
import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmseg.datasets import BaseSegDataset
from mmseg.evaluation.metrics import DepthMetric
from mmseg.registry import DATASETS, METRICS, TRANSFORMS
from torch import Tensor

# The evaluation crops, as fractions of the image: Eigen et al.'s NYU crop (mmseg's 'nyu_crop' takes rows 45:471
# and columns 41:601 of a 480 x 640 image, the same pixels) and Garg et al.'s KITTI crop (the toolbox's).
EVAL_CROPS = {
    'eigen': ((45 / 480, 471 / 480), (41 / 640, 601 / 640)),
    'garg': ((0.40810811, 0.99189189), (0.03594771, 0.96405229)),
}
KITTI_DEPTH_SCALE = 256.0  # KITTI's 16-bit depth PNGs hold metres x 256 (0: no lidar point)


def eval_crop_mask(shape: Sequence[int], crop: Optional[str], device=None) -> Tensor:
    """A (H, W) boolean mask of the pixels an evaluation crop keeps."""
    h, w = int(shape[-2]), int(shape[-1])
    mask = torch.zeros((h, w), dtype=torch.bool, device=device)
    if crop is None:
        return mask.fill_(True)
    if crop == 'nyu_crop':  # mmseg's: fixed pixels, meaningful only at NYU's size
        if (h, w) != (480, 640):
            raise ValueError(f"crop_type='nyu_crop' is mmseg's fixed 480 x 640 crop; this ground truth is {h} x {w}: "
                             "use crop_type='eigen' (the same crop as fractions of the image)")
        mask[45:471, 41:601] = True
        return mask
    if crop not in EVAL_CROPS:
        raise ValueError(f'unknown crop_type {crop!r}: one of None, nyu_crop, {", ".join(EVAL_CROPS)}')
    (r0, r1), (c0, c1) = EVAL_CROPS[crop]
    if crop == 'eigen':
        mask[round(r0 * h):round(r1 * h), round(c0 * w):round(c1 * w)] = True
    else:  # the toolbox's Garg crop truncates
        mask[int(r0 * h):int(r1 * h), int(c0 * w):int(c1 * w)] = True
    return mask


@METRICS.register_module()
class CheckedDepthMetric(DepthMetric):
    """mmseg's ``DepthMetric``, with the evaluation protocol of DINOv2's depth numbers.

    Differences: ``depth_metrics=[...]`` works (mmseg 1.2 tests ``isinstance(x, [tuple, list])``, a TypeError:
    open-mmlab/mmsegmentation PR 3882); predictions are clipped to ``[min_depth_eval, max_depth_eval]`` (the
    toolbox does, mmseg does not); ``crop_type`` also takes ``'eigen'`` (NYU's crop at any image size) and
    ``'garg'`` (KITTI's); a ground-truth map with no pixel left to evaluate is an error naming the image
    rather than NaNs in the averages.
    """

    def __init__(self, depth_metrics: Optional[List[str]] = None, crop_type: Optional[str] = None,
                 clip_predictions: bool = True, **kwargs):
        super().__init__(depth_metrics=None, crop_type=None, **kwargs)
        if depth_metrics is not None:
            unknown = [m for m in depth_metrics if m not in self.METRICS]
            if unknown or not depth_metrics:
                raise ValueError(f'depth_metrics {list(depth_metrics)}: each one of {self.METRICS}')
            self.metrics = tuple(depth_metrics)
        if crop_type not in (None, 'nyu_crop', *EVAL_CROPS):
            raise ValueError(f'unknown crop_type {crop_type!r}: one of None, nyu_crop, {", ".join(EVAL_CROPS)}')
        self.crop_type = crop_type
        self.clip_predictions = clip_predictions

    def _get_eval_mask(self, gt_depth: Tensor) -> Tensor:
        valid = (gt_depth > self.min_depth_eval) & (gt_depth < self.max_depth_eval)
        return valid & eval_crop_mask(gt_depth.shape, self.crop_type, gt_depth.device)

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        checked = []
        for sample in data_samples:
            pred = sample['pred_depth_map']['data']
            if self.clip_predictions:
                pred = pred.clamp(max(self.min_depth_eval, 1e-6), self.max_depth_eval)
            if not self.format_only:
                gt = sample['gt_depth_map']['data'].squeeze()
                if pred.squeeze().shape != gt.shape:
                    raise ValueError(f"{sample.get('img_path')}: prediction {tuple(pred.squeeze().shape)} and ground "
                                     f'truth {tuple(gt.shape)} differ in size (load the depth after any resize)')
                if not self._get_eval_mask(gt.to(pred)).any():
                    raise ValueError(f"{sample.get('img_path')}: no ground-truth pixel in ({self.min_depth_eval}, "
                                     f'{self.max_depth_eval}) m inside the {self.crop_type} crop to evaluate')
            checked.append(dict(sample, pred_depth_map=dict(sample['pred_depth_map'], data=pred)))
        super().process(data_batch, checked)


@DATASETS.register_module()
class KITTIDepthDataset(BaseSegDataset):
    """KITTI depth, Eigen split, from a split file in the format of BTS and the depth toolbox::

        2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000069.png \
2011_09_26_drive_0002_sync/proj_depth/groundtruth/image_02/0000000069.png 721.5377

    one image per line: the RGB path (under ``data_prefix['img_path']``), the ground-truth path (under
    ``data_prefix['depth_map_path']``; ``None`` where the split has no ground truth, which a test split
    must not have) and the focal length. Ground truth is sparse (projected lidar; 0 where no point fell):
    load it with ``LoadDepthAnnotation(depth_rescale_factor=1 / 256)`` and every loss and metric skips the zeros.
    """
    METAINFO = dict(classes=('kitti', ))

    def __init__(self, ann_file: str, data_prefix=dict(img_path='raw', depth_map_path='gt_depth'),
                 img_suffix='.png', depth_map_suffix='.png', **kwargs):
        super().__init__(ann_file=ann_file, data_prefix=data_prefix, img_suffix=img_suffix,
                         seg_map_suffix=depth_map_suffix, **kwargs)

    def load_data_list(self) -> List[dict]:
        if not fileio.exists(self.ann_file, backend_args=self.backend_args):
            raise FileNotFoundError(f'KITTI split file not found: {self.ann_file}')
        img_dir = self.data_prefix.get('img_path', '')
        gt_dir = self.data_prefix.get('depth_map_path', '')
        data_list = []
        lines = fileio.get_text(self.ann_file, backend_args=self.backend_args).splitlines()
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 3:
                raise ValueError(f'{self.ann_file}, line {n}: expected "<image> <depth or None> <focal>", got {line!r}')
            image, depth, focal = parts
            if depth == 'None':
                if self.test_mode:
                    raise ValueError(f'{self.ann_file}, line {n}: test image {image} has no ground truth')
                continue  # training lines without ground truth are skipped, as the toolbox skips them
            data_list.append(dict(img_path=osp.join(img_dir, image), depth_map_path=osp.join(gt_dir, depth),
                                  focal=float(focal), seg_fields=[], category_id=0))
        if not data_list:
            raise ValueError(f'{self.ann_file} lists no image with ground truth')
        return data_list


@TRANSFORMS.register_module()
class KBCrop(BaseTransform):
    """The KITTI benchmark crop: the bottom ``height`` rows and the centred ``width`` columns (352 x 1216) of the
    image and of every map in ``seg_fields``, as the KITTI depth benchmark and the depth toolbox crop."""

    def __init__(self, height: int = 352, width: int = 1216):
        self.height, self.width = height, width

    def transform(self, results: dict) -> dict:
        h, w = results['img'].shape[:2]
        if h < self.height or w < self.width:
            raise ValueError(f"{results.get('img_path')}: {h} x {w} is smaller than the KITTI benchmark crop "
                             f'{self.height} x {self.width}')
        top, left = h - self.height, (w - self.width) // 2
        results['img'] = results['img'][top:, left:left + self.width]
        for key in results.get('seg_fields', []):
            results[key] = results[key][top:, left:left + self.width]
        results['img_shape'] = results['img'].shape[:2]
        results['ori_shape'] = results['img'].shape[:2]  # predictions are compared with the cropped depth
        return results

    def __repr__(self):
        return f'{type(self).__name__}(height={self.height}, width={self.width})'


def constant_depth_metrics(root: str, depth: float, split: str = 'test', crop_type: Optional[str] = None,
                           min_depth_eval: float = 1e-3, max_depth_eval: float = 10.0) -> dict:
    """The metrics of predicting ``depth`` everywhere on an NYU-layout split, with :class:`CheckedDepthMetric`
    (what a model must beat: the training set's median is the best constant for the log metrics)."""
    from PIL import Image
    metric = CheckedDepthMetric(crop_type=crop_type, min_depth_eval=min_depth_eval, max_depth_eval=max_depth_eval)
    ann_dir = osp.join(root, 'annotations', split)
    samples = []
    for name in sorted(fileio.list_dir_or_file(ann_dir, list_dir=False, suffix='.png')):
        gt = torch.from_numpy(np.asarray(Image.open(osp.join(ann_dir, name))).astype(np.float32) / 1000.0)
        samples.append(dict(img_path=name, gt_depth_map=dict(data=gt[None]),
                            pred_depth_map=dict(data=torch.full_like(gt[None], depth))))
    metric.process({}, samples)
    return metric.compute_metrics(metric.results)
