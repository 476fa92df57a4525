"""Monocular depth estimation: DINOv2's linear and DPT depth heads on InternViT (or any encoder of
``models.backbones``), in mmseg's ``DepthEstimator``. Guide: docs/depth_estimation.md."""
from .dpt_head import DPTDepthHead
from .estimator import DepthTTAModel, ViTDepthEstimator
from .linear_head import BNBinsDepthHead
from .losses import GradientMatchingLoss
from .visualization import DepthLocalVisualizer

__all__ = ['BNBinsDepthHead', 'DPTDepthHead', 'DepthLocalVisualizer', 'DepthTTAModel', 'GradientMatchingLoss',
           'ViTDepthEstimator']
