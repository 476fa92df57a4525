from .ade20k import CheckedADE20KDataset, CheckSegMapSize

__all__ = ['CheckedADE20KDataset', 'CheckSegMapSize']
