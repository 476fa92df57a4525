# internvit_6b_adapter_mask2former_frozen_ade20k_896.py in small: a frozen tiny InternViT + ViT-Adapter (as
# tiny_adapter_upernet_frozen_synthetic.py) + a Mask2Former decoder 64 wide (2 pixel-decoder layers, 3 decoder
# layers: one round over the 3 levels, 20 queries), on the synthetic ADE20K set and the tiny schedule.
_base_ = ['../../_base_/models/internvit_adapter_mask2former.py', '../../_base_/models/tiny_internvit.py',
          '../../_base_/datasets/synthetic_ade20k.py', '../../_base_/default_runtime.py',
          '../../_base_/schedules/schedule_tiny.py']
dims = 64
model = dict(
    data_preprocessor=dict(size={{_base_.tiny_crop}}),
    backbone=dict(vit=dict(arch={{_base_.tiny_arch}}, img_size=112, pretrain_size=112, init_cfg=None),
                  interaction_indexes=[[0, 0], [1, 1], [2, 2], [3, 3]],
                  num_heads=3,  # value width 96 * 0.5 = 48 -> 16 per head
                  conv_inplanes=16, norm_cfg={{_base_.tiny_norm_cfg}}, with_cp=False),
    decode_head=dict(
        in_channels=[96] * 4,
        feat_channels=dims,
        out_channels=dims,
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
        # points per mask for the losses: as many as a 112 crop's stride-4 mask has pixels (28 x 28)
        train_cfg=dict(num_points=784)),
    test_cfg={{_base_.tiny_test_cfg}})
optim_wrapper = dict(clip_grad=dict(_delete_=True, max_norm=0.01, norm_type=2),
                     paramwise_cfg=dict(no_decay_names=['level_embed', 'query_embed', 'query_feat']))
