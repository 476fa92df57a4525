from .internvit import ARCH_PRESETS, InternViT
from .vit_adapter import (ConvFFN, Extractor, Injector, InteractionBlock, InternViTAdapter, SpatialPriorModule,
                          deform_inputs)

__all__ = ['ARCH_PRESETS', 'InternViT', 'InternViTAdapter', 'ConvFFN', 'Extractor', 'Injector', 'InteractionBlock',
           'SpatialPriorModule', 'deform_inputs']
