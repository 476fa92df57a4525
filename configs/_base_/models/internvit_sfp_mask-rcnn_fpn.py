# Mask R-CNN + FPN on a plain InternViT-6B through a simple feature pyramid (ViTDet), the detector of
# InternVL's own COCO runs: the last block's map (stride 16) becomes strides 4 / 8 / 16 / 32 by
# ConvTranspose-LN-GELU-ConvTranspose / ConvTranspose / identity / max-pool (mmseg's Feature2Pyramid),
# and mmdet's FPN on top of those adds the lateral/output convs and the stride-64 level.
#
# As InternVL's: 16 px patches (the patch kernel resized from 14 on loading), the position grid held at
# the checkpoint's 16x16 (pretrain_size 256), and every block attending within 16x16-token windows.
# ViTDet would also make a few blocks global (global_blocks=[11, 23, 35, 47]): a window of 16 tokens is
# 256 px, so without global blocks no token sees beyond its own 256 px tile of the image.
_base_ = ['./internvit_mask-rcnn_fpn.py']
model = dict(
    backbone=dict(
        _delete_=True,
        type='InternViT',
        arch='6b',
        img_size=800,
        patch_size=16,
        pretrain_size=256,
        # Feature2Pyramid takes one map per level; all four are the last block's
        out_indices=[47, 47, 47, 47],
        drop_path_rate=0.0,
        frozen=True,
        with_cp=False,
        window_size=16,
        global_blocks=[],
        # a Hugging Face repository, fetched once into its cache; a local path works too (docs/checkpoints.md)
        init_cfg=dict(type='Pretrained', checkpoint='OpenGVLab/InternViT-6B-224px')),
    # a list: mmengine builds it as a Sequential (neck.0 = pyramid, neck.1 = the base's FPN)
    neck=[
        dict(type='Feature2Pyramid', embed_dim=3200, rescales=[4, 2, 1, 0.5], norm_cfg=dict(type='LN2d')),
        {{_base_.model.neck}},
    ])
