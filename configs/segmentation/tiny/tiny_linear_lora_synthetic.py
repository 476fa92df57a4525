# tiny_linear_frozen_synthetic.py with LoRA: the same frozen tiny InternViT and BN + 1x1 conv head, peft LoRA
# adapters (rank 8 of width 96) on the four linears of the blocks the head reads (blocks 0-2: the head is on
# block 2's output, so the forward never runs block 3), trained with the head; the schedule and lr are the frozen
# config's, so the two compare as they are (tests/test_lora_e2e.py::test_lora_beats_the_same_config_frozen).
# Point init_cfg at a pretrained tiny backbone to get adapters-only checkpoints.
_base_ = ['./tiny_linear_frozen_synthetic.py']
model = dict(backbone=dict(frozen=False, lora=dict(rank=8, alpha=16, dropout=0.05,
                                                   targets=('attn.qkv', 'attn.proj', 'mlp.fc1', 'mlp.fc2'),
                                                   blocks=[0, 1, 2])))
