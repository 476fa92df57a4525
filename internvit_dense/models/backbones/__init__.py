from .internvit import ARCH_PRESETS, InternViT
from .library_encoders import HFEncoder, TimmEncoder

__all__ = ['ARCH_PRESETS', 'InternViT', 'TimmEncoder', 'HFEncoder']
