# A tiny InternViT (6B-style: RMSNorm, qk-norm, layer scale) for CPU runs and tests: the 'tiny' preset of
# internvit_dense/models/backbones/internvit.py, the one tiny architecture of the project (96 wide, 4 blocks).
# Tiny leaves take these with {{_base_.tiny_*}}.
tiny_arch = 'tiny'
tiny_norm_cfg = dict(type='BN', requires_grad=True)  # SyncBN needs CUDA
tiny_crop = (112, 112)
tiny_test_cfg = dict(mode='slide', crop_size=(112, 112), stride=(72, 72))
