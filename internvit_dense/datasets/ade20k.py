"""ADE20K with early, clear errors for the data problems people actually meet, and the few-shot subsets."""
import hashlib
import os.path as osp
import random
from typing import List

import numpy as np

from mmcv.transforms import BaseTransform
from mmengine.logging import print_log
from mmseg.datasets import ADE20KDataset
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
