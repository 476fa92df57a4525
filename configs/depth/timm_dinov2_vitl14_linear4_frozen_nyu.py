# The comparison: DINOv2's linear 4-block depth probe on DINOv2 ViT-L/14 (timm, frozen), its blocks [4, 11, 17, 23]
# (DINOv2's own choice for ViT-L; it reports 0.333 NYU RMSE). Same head, data and schedule as InternViT-6B's.
_base_ = ['./timm_dinov2_vitl14_linear1_frozen_nyu.py']
model = dict(backbone=dict(out_indices=[4, 11, 17, 23]), decode_head=dict(in_index=[0, 1, 2, 3]))
