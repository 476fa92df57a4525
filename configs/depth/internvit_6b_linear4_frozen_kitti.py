# internvit_6b_linear4_frozen_nyu.py on KITTI (Eigen split): blocks [11, 23, 35, 47], max depth 80 m, benchmark crop,
# slide test, Garg's crop (configs/_base_/datasets/kitti_depth.py).
_base_ = ['./internvit_6b_linear1_frozen_kitti.py']
model = dict(backbone=dict(out_indices={{_base_.linear4_out_indices}}), decode_head=dict(in_index=[0, 1, 2, 3]))
