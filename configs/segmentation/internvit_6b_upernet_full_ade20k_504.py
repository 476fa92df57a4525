# Full tuning (InternVL paper: 58.9 mIoU): InternViT-6B trained with layer-wise lr decay 0.95.
_base_ = ['./internvit_6b_upernet_frozen_ade20k_504.py']
model = dict(
    # The backbone trains: its weights stay fp32 master weights (not the frozen config's bf16; DeepSpeed bf16 keeps
    # its own bf16 copy for compute).
    backbone=dict(frozen=False, dtype='float32', drop_path_rate=0.4, with_cp=True),
    # InternVL's full-tuning config leaves the auxiliary head on mmseg's default level 2 (stride 14), where its
    # head-tuning config sets level 1; the auxiliary head only trains (inference reads decode_head alone).
    auxiliary_head=dict(in_index=2))
optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=0.95))
