# Few-shot semantic segmentation, the InternVL paper's table (ADE20K; 1/16, 1/8, 1/4, 1/2, 1/1 of the
# training images: 46.5 / 50.0 / 53.3 / 55.8 / 57.2 mIoU), this file being the 1/1 row: InternViT-6B
# fully fine-tuned with the BN + 1x1 conv head on block 48 of 48 (out_indices [47]); drop path 0.4,
# layer-wise lr decay 0.95, AdamW 4e-5, weight decay 0.05, linear warm-up then poly to 0.
# As InternVL's few_shot/linear_intern_vit_6b_504_{5k,10k,20k,40k,80k}_ade20k_bs16_lr4e-5_1of{16,8,4,2,1}.py:
# the warm-up scales with the schedule (100 / 200 / 400 / 800 / 1500 iterations), 16 images per iteration
# (2 per GPU x 8), checkpoints and evaluation every 1000 iterations.
# InternVL trained the backbone in bf16 (ToBFloat16Hook; DeepSpeed ZeRO-1 bf16 in its latest configs): that
# is the _deepspeed form of each row, which is also the one whose AdamW state fits 80 GB GPUs.
_base_ = ['../_base_/models/internvit_linear.py', '../_base_/datasets/ade20k_504.py',
          '../_base_/default_runtime.py', '../_base_/schedules/schedule_80k.py']
model = dict(backbone=dict(out_indices=[47], frozen=False, drop_path_rate=0.4, with_cp=True))
optim_wrapper = dict(optimizer=dict(weight_decay=0.05), paramwise_cfg=dict(layer_decay_rate=0.95))
# 1/N of the training images, the same ones on every machine (see internvit_dense/datasets/ade20k.py)
train_dataloader = dict(dataset=dict(subset_denominator=1))
