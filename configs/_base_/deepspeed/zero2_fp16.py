# ZeRO-2 with fp16 and DeepSpeed's dynamic loss scaling, for GPUs without bf16 (see zero1_bf16.py).
# Usage: see zero1.py.
_base_ = ['./zero2.py']
strategy = dict(fp16=dict(enabled=True, loss_scale=0, initial_scale_power=16), inputs_to_half=['inputs'],
                config=dict(data_types=dict(buffer_dtype='fp16')))
