from .backbones import InternViT
from .heads import BNLinearHead
from .necks import InternViTAdapter
from .registry import register_all

register_all()

__all__ = ['InternViT', 'BNLinearHead', 'InternViTAdapter']
