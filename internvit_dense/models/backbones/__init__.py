from .internvit import ARCH_PRESETS, InternViT
from .library_encoders import HFEncoder, TimmEncoder
from .vit_adapter import (ConvFFN, Extractor, Injector, InteractionBlock, InternViTAdapter, SpatialPriorModule,
                          deform_inputs)

__all__ = ['ARCH_PRESETS', 'InternViT', 'InternViTAdapter', 'ConvFFN', 'Extractor', 'Injector', 'InteractionBlock',
           'SpatialPriorModule', 'deform_inputs', 'TimmEncoder', 'HFEncoder']
