# internvit_6b_adapter_mask2former_full_ade20k_896.py trained as InternVL trained its full-tuning rows: DeepSpeed
# ZeRO-1, bf16 (clip_grad becomes DeepSpeed's gradient_clipping). Checkpoints are DeepSpeed folders; see
# configs/_base_/deepspeed/zero1.py for ZeRO-2/3 and tools/zero_to_fp32.py.
_base_ = ['./internvit_6b_adapter_mask2former_full_ade20k_896.py', '../_base_/deepspeed/zero1_bf16.py']
