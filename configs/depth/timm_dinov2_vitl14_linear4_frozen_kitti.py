# timm_dinov2_vitl14_linear4_frozen_nyu.py on KITTI (Eigen split): blocks [4, 11, 17, 23], max depth 80 m.
_base_ = ['./timm_dinov2_vitl14_linear1_frozen_kitti.py']
model = dict(backbone=dict(out_indices=[4, 11, 17, 23]), decode_head=dict(in_index=[0, 1, 2, 3]))
