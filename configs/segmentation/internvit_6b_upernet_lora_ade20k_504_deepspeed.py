# internvit_6b_upernet_lora_ade20k_504.py under DeepSpeed ZeRO-2 bf16 (the adapters' optimizer state and
# gradients partitioned over the GPUs; the frozen base is never in the optimizer). ZeRO-3 is refused for LoRA
# configs (internvit_dense/engine/deepspeed.py says why). Checkpoints are DeepSpeed folders: tools/zero_to_fp32.py.
_base_ = ['./internvit_6b_upernet_lora_ade20k_504.py', '../_base_/deepspeed/zero2_bf16.py']
