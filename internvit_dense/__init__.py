"""internvit-dense: InternViT-6B as an OpenMMLab backbone for dense prediction."""
__version__ = '0.1.0'
