# internvit_6b_upernet_lora_ade20k_504_deepspeed.py in small: the tiny LoRA config with ZeRO-2 bf16.
_base_ = ['./tiny_upernet_lora_synthetic.py', '../../_base_/deepspeed/zero2_bf16.py']
