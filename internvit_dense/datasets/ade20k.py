"""ADE20K with early, clear errors for the data problems people actually meet."""
import os.path as osp

from mmcv.transforms import BaseTransform
from mmseg.datasets import ADE20KDataset
from mmseg.registry import DATASETS, TRANSFORMS

DATA_HELP = ('put ADEChallengeData2016 (images/ and annotations/ inside) there and point data_root at it, '
             'or write the small synthetic set: python tools/generate_synthetic_ade20k.py --root DIR')


@DATASETS.register_module()
class CheckedADE20KDataset(ADE20KDataset):
    """mmseg's ``ADE20KDataset`` that refuses a missing or incomplete data root at build time,
    instead of failing later inside a data loader worker (or spinning on an empty sampler)."""

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
        return data_list


@TRANSFORMS.register_module()
class CheckSegMapSize(BaseTransform):
    """Fails on a label map whose size differs from its image's (before any resizing).

    Without it a mismatched pair trains silently on misaligned labels (random crops
    cut both at the same coordinates) or fails deep inside the metric.
    """

    def transform(self, results: dict) -> dict:
        if 'gt_seg_map' not in results:  # inference (mmseg.apis drops LoadAnnotations): nothing to check
            return results
        img_hw = tuple(results['ori_shape'][:2])
        seg_hw = tuple(results['gt_seg_map'].shape[:2])
        if seg_hw != img_hw:
            raise ValueError(f"label map {results.get('seg_map_path')} is {seg_hw[0]}x{seg_hw[1]} but its image "
                             f"{results.get('img_path')} is {img_hw[0]}x{img_hw[1]}")
        return results
