from .internvit import ARCH_PRESETS, InternViT

__all__ = ['ARCH_PRESETS', 'InternViT']
