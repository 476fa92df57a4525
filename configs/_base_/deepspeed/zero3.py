# DeepSpeed ZeRO stage 3 (optimizer state, gradients and parameters partitioned), fp32.
# Usage: see zero1.py. Checkpoints hold each process's shard; tools/zero_to_fp32.py gathers them.
strategy = dict(
    type='DeepSpeedStrategy',
    zero_optimization=dict(
        stage=3,
        reduce_bucket_size=int(5e8),
        overlap_comm=True,
        contiguous_gradients=True,
        # parameters smaller than this stay whole on every process (norms, biases, layer scales)
        stage3_param_persistence_threshold=int(1e5)),
)
