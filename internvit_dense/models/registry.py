"""The model registries configs build from, and the third-party modules our configs name.

Configs run in the 'mmseg' or 'mmdet' scope (linear probing in mmengine's root), and each scope looks
up its own registry first; each of our modules is registered, by a decorator on its class, in the
registries of the tasks that use it.
"""
from mmdet.registry import MODELS as DET_MODELS
from mmengine.registry import MODELS as ENGINE_MODELS
from mmseg.models.necks import Feature2Pyramid
from mmseg.registry import MODELS as SEG_MODELS
from timm.layers import LayerNorm2d

# Channel-wise LayerNorm for NCHW maps, e.g. in mmseg's Feature2Pyramid (norm_cfg=dict(type='LN2d')):
# mmcv's 'LN' normalises the last (width) axis instead.
ENGINE_MODELS.register_module('LN2d', module=LayerNorm2d, force=True)
# The ViTDet-style simple feature pyramid of detection configs is mmseg's Feature2Pyramid; in a
# detector it runs before mmdet's FPN (neck=[Feature2Pyramid, FPN], built as a Sequential).
DET_MODELS.register_module(module=Feature2Pyramid, force=True)

__all__ = ['DET_MODELS', 'ENGINE_MODELS', 'SEG_MODELS']
