# Linear probing on ImageNet-1k (InternVL paper: 88.2 top-1; ReaL 90.4, V2 79.9, A 77.5, R 89.8, Sketch 69.1).
# Frozen InternViT-6B; feature = [cls || mean of patch tokens] of the last block (6400-d) -> BatchNorm
# (eps 1e-6, with scale and shift) -> Linear(6400 -> 1000), N(0, 0.01): 6,413,800 trainable parameters, as
# InternVL's classification/models/intern_vit_6b.py (SyncBatchNorm(6400, eps=1e-6) + Linear), so that its
# released head intern_vit_6b_224px_head.pth loads as it is (tools/test.py THIS_CONFIG intern_vit_6b_224px_head.pth).
# 8 GPUs x 128 images, lr 0.1 x 1024 / 512 = 0.2, 10 epochs, bf16 autocast:
#   tools/dist_train.sh configs/classification/internvit_6b_linear_probe_in1k.py 8
# Checkpoints hold the head only (26 MB); loading one takes the backbone from init_cfg's checkpoint.
# Scoring on the variants: tools/test.py CONFIG CKPT --cfg-options test_dataloader.dataset.variant=a, or all
# at once from cached features: tools/linear_probe.py eval --cache ... --recipe-checkpoint CKPT.
# No EMA of the head: InternVL's linear-probing config carries one (decay 0.998) but switched off.
_base_ = ['../_base_/datasets/imagenet_linear_probe.py', '../_base_/schedules/linear_probe_10e.py',
          '../_base_/default_runtime_cls.py']
model = dict(
    type='LinearProbeClassifier',
    data_preprocessor=dict(type='ImgDataPreprocessor', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                           bgr_to_rgb=True),
    backbone=dict(
        type='InternViT',
        arch='6b',
        img_size=224,
        frozen=True,
        # stored in bf16 (11 GB instead of 22 GB; nothing updates it), filled from the checkpoint without an fp32
        # copy; norms compute in fp32 and the features reach the fp32 head in fp32
        dtype='bfloat16',
        with_cp=False,
        # a Hugging Face repository, fetched once into its cache; a local path works too (docs/checkpoints.md)
        init_cfg=dict(type='Pretrained', checkpoint='OpenGVLab/InternViT-6B-224px')),
    num_classes=1000,
    n_last_blocks=1,
    avgpool=True,
    bn_affine=True)
# bf16 rather than fp16: InternViT-6B was trained in bf16 and its residual stream can leave fp16's range.
optim_wrapper = dict(type='AmpOptimWrapper', dtype='bfloat16')
