from .linear_head import BNLinearHead
from .mask2former_head import SlideSafeMask2FormerHead

__all__ = ['BNLinearHead', 'SlideSafeMask2FormerHead']
