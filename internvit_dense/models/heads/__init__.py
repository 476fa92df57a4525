from .linear_head import BNLinearHead

__all__ = ['BNLinearHead']
