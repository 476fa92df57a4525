from .vit_adapter import (ConvFFN, Extractor, Injector, InteractionBlock, InternViTAdapter, SpatialPriorModule,
                          deform_inputs)

__all__ = ['ConvFFN', 'Extractor', 'Injector', 'InteractionBlock', 'InternViTAdapter', 'SpatialPriorModule',
           'deform_inputs']
