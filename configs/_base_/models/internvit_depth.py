# InternViT-6B in ViTDepthEstimator (mmseg's DepthEstimator; internvit_dense/models/depth/estimator.py): what the
# depth models share. The backbone is frozen (DINOv2's depth protocol: a head trained on frozen features);
# internvit_depth_linear.py / internvit_depth_dpt.py pick the blocks and add the heads.
norm_cfg = dict(type='SyncBN', requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=0,  # depth padding is "no depth": 255 would be learned as 255 m (ViTDepthEstimator refuses it)
    size_divisor=14)  # training batches padded to whole patches; the leaves pad to their crop (size=crop_size)
model = dict(
    type='ViTDepthEstimator',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='InternViT',
        arch='6b',
        img_size=504,
        pretrain_size=224,  # the checkpoint's 16 x 16 grid, interpolated to every input's grid
        drop_path_rate=0.0,
        frozen=True,
        with_cp=False,
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/intern_vit_6b_224px.pth')),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
