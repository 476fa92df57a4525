# A tiny InternViT (6B-style: RMSNorm, qk-norm, layer scale) for CPU runs and tests; tiny leaves
# take these with {{_base_.tiny_*}}.
# _delete_: replaces the base config's arch='6b' instead of merging into it
tiny_arch = dict(_delete_=True, embed_dims=96, depth=4, num_heads=4, mlp_dims=384, norm_type='rms_norm',
                 qk_normalization=True, qkv_bias=False)
tiny_norm_cfg = dict(type='BN', requires_grad=True)  # SyncBN needs CUDA
tiny_crop = (112, 112)
tiny_test_cfg = dict(mode='slide', crop_size=(112, 112), stride=(72, 72))
