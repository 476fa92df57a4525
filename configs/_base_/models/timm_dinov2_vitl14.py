# A ViT-L-sized encoder of another library in place of InternViT: DINOv2 ViT-L/14 through timm
# (internvit_dense TimmEncoder: timm's forward_intermediates, InternViT's out_indices / frozen semantics).
# The weights are a local file (nothing is downloaded): save timm's `vit_large_patch14_dinov2.lvd142m`
# (model.safetensors of timm/vit_large_patch14_dinov2.lvd142m on the Hugging Face hub) or Meta's
# dinov2_vitl14_pretrain.pth (timm converts its layout) to the path below.
# Patch 14 at 504 px gives InternViT's 36 x 36 grid, so the heads and the pyramid are InternViT's.
timm_linear_backbone = dict(
    _delete_=True,
    type='TimmEncoder',
    model_name='vit_large_patch14_dinov2.lvd142m',  # the tag sets DINOv2's mean/std and its 518 px grid
    out_indices=[23],
    frozen=True,
    norm=True,  # every block through the final LayerNorm, as DINOv2's own evaluations read them
    init_cfg=dict(type='Pretrained', checkpoint='pretrained/vit_large_patch14_dinov2.lvd142m.safetensors'))
# head tuning: four blocks spread over the depth, as [11, 23, 35, 47] over InternViT-6B's 48
timm_upernet_backbone = dict(timm_linear_backbone, out_indices=[5, 11, 17, 23])
timm_dims = 1024
# depth (configs/depth/timm_*): DINOv2's own 4 blocks of ViT-L for its depth probes
timm_depth_backbone = dict(timm_linear_backbone, out_indices=[4, 11, 17, 23])
