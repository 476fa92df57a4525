"""ADE20K with early, clear errors for the data problems people actually meet, and the few-shot subsets."""
import hashlib
import os.path as osp
import random
from typing import List

import numpy as np

import mmcv
import mmengine.fileio as fileio
from mmcv.transforms import BaseTransform
from mmengine.logging import print_log
from mmseg.datasets import ADE20KDataset
from mmseg.datasets.transforms import LoadAnnotations
from mmseg.registry import DATASETS, TRANSFORMS

from .checks import check_no_empty_files

DATA_HELP = ('put ADEChallengeData2016 (images/ and annotations/ inside) there and point data_root at it, '
             'or write the small synthetic set: python tools/generate_synthetic_ade20k.py --root DIR')


@DATASETS.register_module()
class CheckedADE20KDataset(ADE20KDataset):
    """mmseg's ``ADE20KDataset`` that refuses a missing or incomplete data root at build time,
    instead of failing later inside a data loader worker (or spinning on an empty sampler).

    ``subset_denominator=N`` keeps ``len(images) // N`` images, InternVL's few-shot rule
    (``max_image_num=20210 // N``), chosen as :func:`few_shot_subset` says.
    """

    def __init__(self, *args, subset_denominator: int = 1, subset_seed: int = 0, **kwargs):
        if int(subset_denominator) != subset_denominator or subset_denominator < 1:
            raise ValueError(f'subset_denominator must be a whole number >= 1 (1/N of the images), '
                             f'got {subset_denominator!r}')
        self.subset_denominator, self.subset_seed = int(subset_denominator), subset_seed
        super().__init__(*args, **kwargs)

    def load_data_list(self):
        img_dir = self.data_prefix.get('img_path', '')
        ann_dir = self.data_prefix.get('seg_map_path')
        for kind, folder in (('images', img_dir), ('annotations', ann_dir)):
            if folder is not None and not osp.isdir(folder):
                raise FileNotFoundError(f'ADE20K {kind} folder {folder} does not exist (data_root='
                                        f'{self.data_root!r}): {DATA_HELP}')
        data_list = super().load_data_list()
        if not data_list:
            raise FileNotFoundError(f'no *{self.img_suffix} images in {img_dir}: {DATA_HELP}')
        if ann_dir is not None:
            missing = [d['seg_map_path'] for d in data_list if not osp.isfile(d['seg_map_path'])]
            if missing:
                raise FileNotFoundError(f'{len(missing)} of {len(data_list)} images in {img_dir} have no '
                                        f'annotation, e.g. {missing[:3]}')
        if self.subset_denominator > 1:
            data_list = few_shot_subset(data_list, self.subset_denominator, self.subset_seed)
            print_log(f'few-shot subset of {img_dir}: {len(data_list)} images (1/{self.subset_denominator}, '
                      f'seed {self.subset_seed}, fingerprint {subset_fingerprint(data_list)})', logger='current')
        check_no_empty_files((p for d in data_list for p in (d['img_path'], d.get('seg_map_path'))), self.data_root)
        # what CheckSegMapSize checks the label values against
        for info in data_list:
            info['num_classes'] = len(self.metainfo['classes'])
            info['ignore_index'] = self.ignore_index
        return data_list


def few_shot_subset(data_list: List[dict], denominator: int, seed: int = 0) -> List[dict]:
    """``len(data_list) // denominator`` samples, the same on every machine and in every process.

    InternVL's rule (its ADE20KDataset's ``max_image_num``): shuffle the file list, keep the
    first ``len // N``. Its shuffle drew from the process's random state, seeded by a number
    its configs do not record (mmseg 0.30's ``init_random_seed`` without ``--seed``), so its
    split cannot be rebuilt; here the names are sorted and shuffled by ``random.Random(seed)``.
    The subsets are nested: the 1/16 images are among the 1/8 ones, and so on. Returned in
    file-name order.
    """
    ordered = sorted(data_list, key=lambda d: osp.basename(d['img_path']))
    random.Random(seed).shuffle(ordered)
    keep = ordered[:len(ordered) // denominator]
    if not keep:
        raise ValueError(f'1/{denominator} of {len(data_list)} images is none: too few images for this subset')
    return sorted(keep, key=lambda d: osp.basename(d['img_path']))


def subset_fingerprint(data_list: List[dict]) -> str:
    """12 hex digits of the SHA-1 of the sorted image file names: equal on two machines = same images."""
    names = '\n'.join(sorted(osp.basename(d['img_path']) for d in data_list))
    return hashlib.sha1(names.encode()).hexdigest()[:12]


@TRANSFORMS.register_module()
class CheckSegMapSize(BaseTransform):
    """Fails on a label map whose size differs from its image's (before any resizing), or which holds
    a value that is neither a class (after ``reduce_zero_label``) nor the ignore index.

    Without it a mismatched pair trains silently on misaligned labels (random crops cut both at the
    same coordinates) or fails deep inside the metric; an out-of-range value stops training with
    "Target 199 is out of bounds" and no file named, and silently lowers the mIoU of tools/test.py.
    The data set (``CheckedADE20KDataset``) tells it ``num_classes`` and ``ignore_index``.
    """

    def transform(self, results: dict) -> dict:
        if 'gt_seg_map' not in results:  # inference (mmseg.apis drops LoadAnnotations): nothing to check
            return results
        img_hw = tuple(results['ori_shape'][:2])
        seg_hw = tuple(results['gt_seg_map'].shape[:2])
        if seg_hw != img_hw:
            raise ValueError(f"label map {results.get('seg_map_path')} is {seg_hw[0]}x{seg_hw[1]} but its image "
                             f"{results.get('img_path')} is {img_hw[0]}x{img_hw[1]}")
        num_classes = results.get('num_classes')
        if num_classes is not None:
            self.check_values(results['gt_seg_map'], num_classes, results.get('ignore_index', 255), results)
        return results

    @staticmethod
    def check_values(seg_map: np.ndarray, num_classes: int, ignore_index: int, results: dict) -> None:
        values = (np.flatnonzero(np.bincount(seg_map.ravel(), minlength=256)) if seg_map.dtype == np.uint8
                  else np.unique(seg_map))
        bad = [int(v) for v in values if not (0 <= v < num_classes or v == ignore_index)]
        if bad:
            zero = results.get('reduce_zero_label')
            raise ValueError(f"label map {results.get('seg_map_path')} holds value {bad[0]}"
                             f"{' (and ' + ', '.join(map(str, bad[1:6])) + ')' if len(bad) > 1 else ''} "
                             f"{'after reduce_zero_label (file value minus 1) ' if zero else ''}but the data set has "
                             f"num_classes={num_classes} (labels 0-{num_classes - 1}) and ignore index {ignore_index}; "
                             'fix the file, or the classes / ignore_index of the data set')


def label_map_problem(seg: np.ndarray) -> str:
    """What makes a decoded label file not a map of class indices in 0-255 (one channel, whole numbers), or ''."""
    if seg.ndim == 3 and seg.shape[2] > 1:
        return (f'has {seg.shape[2]} channels ({seg.shape[0]}x{seg.shape[1]}x{seg.shape[2]}): a label map must be '
                'single-channel, one class index per pixel (an RGB file is a colour rendering of the labels; '
                'convert it back to indices)')
    if seg.ndim not in (2, 3):
        return f'has shape {seg.shape}: a label map is one 2-D array of class indices'
    if not np.issubdtype(seg.dtype, np.integer):
        return f'holds {seg.dtype} values: a label map holds whole class indices (8-bit PNG)'
    if seg.dtype != np.uint8 and seg.size:
        low, high = int(seg.min()), int(seg.max())
        if low < 0 or high > 255:
            return (f'is a {seg.dtype.itemsize * 8}-bit file holding {high if high > 255 else low}: label values '
                    'must lie in 0-255 (classes, and 255 for ignore), which is what an 8-bit label PNG holds')
    return ''


@TRANSFORMS.register_module(name='LoadAnnotations', force=True)
class CheckedLoadAnnotations(LoadAnnotations):
    """mmseg's ``LoadAnnotations`` that looks at the decoded file before casting it to uint8.

    mmseg decodes ``flag='unchanged'`` then casts to uint8 at once: a 16-bit label holding 300 becomes class 43
    (300 mod 256) before :class:`CheckSegMapSize` can see it, an RGB label reaches the collate step as a
    3-channel map ('stack expects each tensor to be equal size'), and its ``squeeze()`` turns a 1x1 label into a
    0-d array that ``reduce_zero_label`` cannot index. Registered under mmseg's name (``force``), so that the
    shipped configs and users' own load labels through the check; a valid label loads exactly as in mmseg.
    """

    def _load_seg_map(self, results: dict) -> None:
        path = results['seg_map_path']
        seg = mmcv.imfrombytes(fileio.get(path, backend_args=self.backend_args), flag='unchanged',
                               backend=self.imdecode_backend)
        if seg is None:
            raise ValueError(f'label map {path} could not be decoded as an image (damaged, or not an image file)')
        problem = label_map_problem(seg)
        if problem:
            raise ValueError(f'label map {path} {problem}')
        if seg.ndim == 3:  # H x W x 1
            seg = seg[..., 0]
        seg = seg.astype(np.uint8)
        if self.reduce_zero_label is None:
            self.reduce_zero_label = results['reduce_zero_label']
        if self.reduce_zero_label != results['reduce_zero_label']:
            raise ValueError(f'LoadAnnotations(reduce_zero_label={self.reduce_zero_label}) but the data set has '
                             f"reduce_zero_label={results['reduce_zero_label']}: set the same on both")
        if self.reduce_zero_label:  # 0 (other) -> 255 (ignore), every class one lower, as mmseg does
            seg = np.where(seg == 0, 255, seg - 1).astype(np.uint8)
            seg[seg == 254] = 255
        if results.get('label_map') is not None:
            original = seg.copy()
            for old_id, new_id in results['label_map'].items():
                seg[original == old_id] = new_id
        results['gt_seg_map'] = seg
        results['seg_fields'].append('gt_seg_map')
