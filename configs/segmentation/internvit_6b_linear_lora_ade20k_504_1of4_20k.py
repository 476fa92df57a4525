# The few-shot row internvit_6b_linear_full_ade20k_504_1of4_20k.py with LoRA instead of full tuning: InternViT-6B
# frozen in bf16 with peft LoRA adapters (fp32) on its four linears, the BN + 1x1 conv head on block 48. Its
# schedule, AdamW 4e-5 and weight decay 0.05 unchanged; drop path 0 and no layer-wise decay, as the blocks'
# weights do not train (see internvit_6b_upernet_lora_ade20k_504.py). The cheapest LoRA row on one GPU.
_base_ = ['./internvit_6b_linear_full_ade20k_504_1of4_20k.py', '../_base_/lora/lora_r16.py']
model = dict(backbone=dict(dtype='bfloat16', drop_path_rate=0.0, with_cp=True, lora={{_base_.lora}}))
optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=1.0))
