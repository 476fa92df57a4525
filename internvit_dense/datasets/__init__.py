from .ade20k import CheckedADE20KDataset, CheckSegMapSize
from .coco import CheckedCocoDataset
from .depth import CheckedDepthMetric, KBCrop, KITTIDepthDataset

__all__ = ['CheckedADE20KDataset', 'CheckSegMapSize', 'CheckedCocoDataset', 'CheckedDepthMetric', 'KBCrop',
           'KITTIDepthDataset']
