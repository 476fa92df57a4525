"""COCO with the early, clear errors of our ADE20K data set."""
from mmdet.datasets import CocoDataset
from mmdet.registry import DATASETS

from .checks import check_no_empty_files


@DATASETS.register_module()
class CheckedCocoDataset(CocoDataset):
    """mmdet's ``CocoDataset`` that names every empty (0-byte) image file when it is built."""

    def load_data_list(self):
        data_list = super().load_data_list()
        check_no_empty_files((d['img_path'] for d in data_list), self.data_prefix.get('img', self.data_root))
        return data_list
