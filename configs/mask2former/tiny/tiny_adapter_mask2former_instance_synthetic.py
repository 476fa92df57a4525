# internvit_6b_adapter_mask2former_instance_coco.py in small: mmdet's Mask2Former (instance segmentation: things only)
# on a tiny InternViT + ViT-Adapter (as tiny_adapter_mask-rcnn_fpn_synthetic.py: 16 px patches, 4x4-token windows,
# block 3 global; the ViT trains, there is no pretrained tiny one), a decoder 64 wide (2 pixel-decoder layers, 3
# decoder layers, 20 queries), on the synthetic COCO set (4 classes) and the tiny detection schedule.
_base_ = ['../../_base_/models/internvit_adapter_mask2former_coco.py', '../../_base_/models/tiny_internvit.py',
          '../../_base_/datasets/synthetic_coco.py', '../../_base_/default_runtime_det.py',
          '../../_base_/schedules/schedule_tiny_det.py']
num_things_classes = 4
dims = 64
model = dict(
    backbone=dict(
        vit=dict(arch={{_base_.tiny_arch}}, img_size=160, patch_size=16, pretrain_size=160, frozen=False,
                 window_size=4, global_blocks=[3], init_cfg=None),
        interaction_indexes=[[0, 0], [1, 1], [2, 2], [3, 3]],
        num_heads=3,  # value width 96 * 0.5 = 48 -> 16 per head
        conv_inplanes=16,
        norm_cfg={{_base_.tiny_norm_cfg}},
        with_cp=False),
    panoptic_head=dict(
        in_channels=[96] * 4,
        feat_channels=dims,
        out_channels=dims,
        num_things_classes=num_things_classes,
        num_stuff_classes=0,
        num_queries=20,
        pixel_decoder=dict(
            encoder=dict(num_layers=2, layer_cfg=dict(self_attn_cfg=dict(embed_dims=dims, num_heads=4),
                                                      ffn_cfg=dict(embed_dims=dims, feedforward_channels=2 * dims))),
            positional_encoding=dict(num_feats=dims // 2)),
        positional_encoding=dict(num_feats=dims // 2),
        transformer_decoder=dict(
            num_layers=3,
            layer_cfg=dict(self_attn_cfg=dict(embed_dims=dims, num_heads=4),
                           cross_attn_cfg=dict(embed_dims=dims, num_heads=4),
                           ffn_cfg=dict(embed_dims=dims, feedforward_channels=2 * dims))),
        loss_cls=dict(class_weight=[1.0] * num_things_classes + [0.1])),
    panoptic_fusion_head=dict(num_things_classes=num_things_classes, num_stuff_classes=0),
    # points per mask for the losses: as many as a 160 px image's stride-4 mask has pixels (40 x 40)
    train_cfg=dict(num_points=1600),
    test_cfg=dict(panoptic_on=False, max_per_image=20))
optim_wrapper = dict(clip_grad=dict(_delete_=True, max_norm=0.01, norm_type=2),
                     paramwise_cfg=dict(layer_decay_rate=0.9,
                                        no_decay_names=['level_embed', 'query_embed', 'query_feat']))
