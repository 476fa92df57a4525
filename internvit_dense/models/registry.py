"""Puts the project's modules into the OpenMMLab registries that configs build from.

Configs run in the 'mmseg' or 'mmdet' scope and each scope looks up its own
registry, so the backbone goes into both (and into mmengine's root for other tasks).
"""
from mmengine.registry import MODELS as ENGINE_MODELS


def register_all():
    from mmdet.registry import MODELS as DET_MODELS
    from mmseg.registry import MODELS as SEG_MODELS
    from timm.layers import LayerNorm2d

    from .backbones import HFEncoder, InternViT, TimmEncoder
    from .heads import BNLinearHead
    from .necks import InternViTAdapter

    for registry in (ENGINE_MODELS, SEG_MODELS, DET_MODELS):
        registry.register_module(module=InternViT, force=True)
        # Other libraries' encoders behind the same interface, for comparisons under the same heads.
        registry.register_module(module=TimmEncoder, force=True)
        registry.register_module(module=HFEncoder, force=True)
    SEG_MODELS.register_module(module=BNLinearHead, force=True)
    # ViT-Adapter: an InternViT with its adapter, used as a backbone (type='InternViTAdapter').
    for registry in (ENGINE_MODELS, SEG_MODELS, DET_MODELS):
        registry.register_module(module=InternViTAdapter, force=True)
    # Channel-wise LayerNorm for NCHW maps, e.g. in mmseg's Feature2Pyramid (norm_cfg=dict(type='LN2d')):
    # mmcv's 'LN' normalises the last (width) axis instead.
    if 'LN2d' not in ENGINE_MODELS.module_dict:
        ENGINE_MODELS.register_module('LN2d', module=LayerNorm2d)
    # The ViTDet-style simple feature pyramid of detection configs is mmseg's Feature2Pyramid; in a
    # detector it runs before mmdet's FPN (neck=[Feature2Pyramid, FPN], built as a Sequential).
    from mmseg.models.necks import Feature2Pyramid
    DET_MODELS.register_module(module=Feature2Pyramid, force=True)
