# internvit_6b_upernet_full_ade20k_504_deepspeed.py in small: the tiny full-tuning config with ZeRO-1 bf16.
# Other stages and precisions: tools/train.py ... --deepspeed {1,2,3} --deepspeed-precision {fp32,bf16,fp16}.
_base_ = ['./tiny_upernet_full_synthetic.py', '../../_base_/deepspeed/zero1_bf16.py']
