# internvit_6b_linear_full_ade20k_504_1of2_40k.py trained as InternVL trained it: DeepSpeed ZeRO-1,
# bf16 (the AdamW with layer-wise lr decay built by LayerDecayOptimWrapperConstructor and handed to DeepSpeed).
# Checkpoints are DeepSpeed folders; tools/zero_to_fp32.py makes one file of them for tools/test.py.
_base_ = ['./internvit_6b_linear_full_ade20k_504_1of2_40k.py', '../_base_/deepspeed/zero1_bf16.py']
