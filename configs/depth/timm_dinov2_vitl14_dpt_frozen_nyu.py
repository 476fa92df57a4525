# The comparison: DINOv2's DPT depth head on DINOv2 ViT-L/14 (timm, frozen), blocks [4, 11, 17, 23], NYU-Depth v2.
_base_ = ['../_base_/models/internvit_depth_dpt.py', '../_base_/models/timm_dinov2_vitl14.py',
          '../_base_/datasets/nyu_depth.py', '../_base_/default_runtime_depth.py',
          '../_base_/schedules/schedule_depth_38k.py']
model = dict(data_preprocessor=dict(size={{_base_.crop_size}}, size_divisor=None),  # padded to the crop
             backbone={{_base_.timm_depth_backbone}},
             decode_head=dict(in_channels={{_base_.timm_dims}}, post_process_channels=[128, 256, 512, 1024]))
