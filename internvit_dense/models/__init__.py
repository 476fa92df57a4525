from .backbones import InternViT
# Classification (linear probing) goes into mmengine's root registry: its configs run without a scope.
from .classifiers import LinearProbeClassifier
from .heads import BNLinearHead
from .necks import InternViTAdapter
from .registry import register_all

register_all()

__all__ = ['InternViT', 'BNLinearHead', 'InternViTAdapter', 'LinearProbeClassifier']
