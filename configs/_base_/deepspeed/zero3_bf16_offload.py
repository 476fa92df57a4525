# ZeRO-3 with bf16 and the optimizer state offloaded to CPU memory (see zero2_bf16_offload.py).
# Usage: see zero1.py.
_base_ = ['./zero3_bf16.py']
strategy = dict(
    zero_optimization=dict(offload_optimizer=dict(device='cpu', pin_memory=True)),
    config=dict(zero_force_ds_cpu_optimizer=False))
