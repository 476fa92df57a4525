# ZeRO-2 with bf16 and the optimizer state (fp32 master weights, Adam moments) kept in CPU memory,
# where the optimizer step also runs. Usage: see zero1.py.
_base_ = ['./zero2_bf16.py']
strategy = dict(
    zero_optimization=dict(offload_optimizer=dict(device='cpu', pin_memory=True)),
    # DeepSpeed refuses an offloaded torch optimizer unless told otherwise: the config's AdamW steps on
    # the CPU as it is. optim_wrapper.optimizer.type='DeepSpeedCPUAdam' is faster there (compiled on
    # first use).
    config=dict(zero_force_ds_cpu_optimizer=False))
