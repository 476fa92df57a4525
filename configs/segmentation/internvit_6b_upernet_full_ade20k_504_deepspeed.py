# internvit_6b_upernet_full_ade20k_504.py trained the way InternVL did: DeepSpeed ZeRO-1, bf16
# (5e8 buckets, overlapped communication), the AdamW with layer-wise lr decay built by
# LayerDecayOptimWrapperConstructor and handed to DeepSpeed. tools/train.py builds a FlexibleRunner.
# Checkpoints are DeepSpeed folders (work_dir/iter_N.pth/); tools/zero_to_fp32.py turns one into a
# single fp32 state dict for tools/test.py.
_base_ = ['./internvit_6b_upernet_full_ade20k_504.py', '../_base_/deepspeed/zero1_bf16.py']
