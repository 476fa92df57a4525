# InternViT-6B at 504 px in mmseg's EncoderDecoder: what the segmentation models share (preprocessing, a
# frozen backbone, slide inference). internvit_linear.py and internvit_upernet.py pick the blocks and add
# the heads; their heads take norm_cfg as {{_base_.norm_cfg}}.
norm_cfg = dict(type='SyncBN', requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=(504, 504))
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='InternViT',
        arch='6b',
        img_size=504,
        # The position embedding is held at the 504 crop's 36x36 grid (1 + 1296 entries), resampled
        # bicubically from the checkpoint's grid once, when it loads: as InternVL's segmentation backbone,
        # whose trained files hold it so (and train it there when the backbone is tuned).
        pretrain_size=504,
        drop_path_rate=0.0,
        frozen=True,
        with_cp=False,
        # a Hugging Face repository, fetched once into its cache; a local path works too (docs/checkpoints.md)
        init_cfg=dict(type='Pretrained', checkpoint='OpenGVLab/InternViT-6B-224px')),
    train_cfg=dict(),
    test_cfg=dict(mode='slide', crop_size=(504, 504), stride=(322, 322)))
