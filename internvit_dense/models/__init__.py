from . import registry  # noqa: F401  (first: the registries the modules below register in)
from . import fp32_ops  # noqa: F401  (Fp32RoIAlign, which detector configs name)
from .backbones import InternViT, InternViTAdapter
# Classification (linear probing) goes into mmengine's root registry: its configs run without a scope.
from .classifiers import LinearProbeClassifier
from .heads import BNLinearHead, SlideSafeMask2FormerHead

__all__ = ['InternViT', 'BNLinearHead', 'InternViTAdapter', 'LinearProbeClassifier', 'SlideSafeMask2FormerHead']
