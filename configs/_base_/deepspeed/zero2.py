# DeepSpeed ZeRO stage 2 (optimizer state and gradients partitioned), fp32. Usage: see zero1.py.
strategy = dict(
    type='DeepSpeedStrategy',
    zero_optimization=dict(
        stage=2,
        allgather_bucket_size=int(5e8),
        reduce_bucket_size=int(5e8),
        overlap_comm=True,
        contiguous_gradients=True),
)
