from .ade20k import CheckedADE20KDataset, CheckSegMapSize
from .coco import CheckedCocoDataset

__all__ = ['CheckedADE20KDataset', 'CheckSegMapSize', 'CheckedCocoDataset']
