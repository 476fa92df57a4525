# internvit_6b_adapter_mask2former_frozen_ade20k_896.py with an adapter that reads the frozen ViT without injecting
# into it (InternViTAdapter(inject=False)): the 6B blocks run under no_grad in bf16, and only the spatial prior,
# the extractors and the decoder keep activations for backward (DINOv3's design for its frozen 7B segmentation
# adapter). The ViT's blocks hold no graph, so checkpointing them has nothing to save.
_base_ = ['./internvit_6b_adapter_mask2former_frozen_ade20k_896.py']
model = dict(backbone=dict(inject=False))
