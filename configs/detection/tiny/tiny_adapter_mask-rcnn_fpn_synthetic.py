# tiny_mask-rcnn_fpn_synthetic.py with a ViT-Adapter instead of the simple feature pyramid: the small
# version of internvit_6b_adapter_mask-rcnn_fpn_*; windows of 4x4 tokens, the interactions' last block
# (3) global.
_base_ = ['./tiny_mask-rcnn_fpn_synthetic.py']
model = dict(
    backbone=dict(
        _delete_=True,
        type='InternViTAdapter',
        vit=dict(arch={{_base_.tiny_arch}}, img_size=160, patch_size=16, pretrain_size=160, frozen=False,
                 window_size=4, global_blocks=[3], init_cfg=None),
        interaction_indexes=[[0, 0], [1, 1], [2, 2], [3, 3]],
        num_heads=3,  # value width 96 * 0.5 = 48 -> 16 per head
        conv_inplanes=16,
        norm_cfg={{_base_.tiny_norm_cfg}}),
    neck=dict(_delete_=True, type='FPN', in_channels=[96, 96, 96, 96], out_channels={{_base_.fpn_channels}},
              num_outs=5))
optim_wrapper = dict(paramwise_cfg=dict(no_decay_names=['level_embed']))
