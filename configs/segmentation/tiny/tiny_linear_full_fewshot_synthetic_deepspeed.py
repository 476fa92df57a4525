# tiny_linear_full_fewshot_synthetic.py with ZeRO-1 bf16, the precision of the few-shot _deepspeed configs.
_base_ = ['./tiny_linear_full_fewshot_synthetic.py', '../../_base_/deepspeed/zero1_bf16.py']
