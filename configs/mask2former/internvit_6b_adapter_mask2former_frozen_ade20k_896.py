# Frozen InternViT-6B + ViT-Adapter + Mask2Former at 896 px (= 64 x 14): the adapter and the decoder train.
# ViT-Adapter's segmentation/configs/ade20k/mask2former_beitv2_adapter_large_896_80k_ade20k_ss.py (BEiTv2-L: 61.2 /
# 61.5 mIoU single / multi-scale, from a COCO-Stuff checkpoint we do not have): 80k iterations, batch 16 (1 x 16
# GPUs), AdamW 2e-5, weight decay 0.05, 1500 linear warm-up iterations then poly, 200 queries, slide 896 / 512.
# mmseg 1.x's Mask2Former configs add what ViT-Adapter's 0.x code did not write down: clip_grad 0.01 and no weight
# decay on the decoder's query / level embeddings. Multi-scale + flip: tools/test.py --tta (6 scales x flip).
_base_ = ['../_base_/models/internvit_adapter_mask2former.py', '../_base_/datasets/ade20k_896.py',
          '../_base_/default_runtime.py', '../_base_/schedules/schedule_80k.py']
crop_size = (896, 896)
model = dict(
    data_preprocessor=dict(size=crop_size),
    # stored in bf16 (11 GB instead of 22 GB; nothing updates it), norms in fp32, features leave in fp32
    backbone=dict(vit=dict(img_size=896, dtype='bfloat16')),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(512, 512)))
optim_wrapper = dict(
    optimizer=dict(lr=2e-5),
    clip_grad=dict(_delete_=True, max_norm=0.01, norm_type=2),
    # looked up, not multiplied (mmseg's Mask2Former configs: decay_mult=0 for query_embed, query_feat, level_embed)
    paramwise_cfg=dict(no_decay_names=['level_embed', 'query_embed', 'query_feat']))
