# DeepSpeed ZeRO stage 1 (optimizer state partitioned over the processes), fp32.
#
# Inherit one of these files next to a model config (they define `strategy` only, so they
# combine with any project config):
#     _base_ = ['../segmentation/internvit_6b_upernet_full_ade20k_504.py', '../_base_/deepspeed/zero1_bf16.py']
# or keep a config as it is and pass `tools/train.py CONFIG --deepspeed 1`.
# tools/train.py then builds mmengine's FlexibleRunner with this DeepSpeedStrategy and turns the
# config's optim_wrapper into a DeepSpeedOptimWrapper: same optimizer, same constructor (layer-wise
# lr decay groups, frozen parameters left out), `clip_grad` becomes DeepSpeed's gradient clipping.
# The micro batch size is taken from train_dataloader.batch_size.
strategy = dict(
    type='DeepSpeedStrategy',
    zero_optimization=dict(
        stage=1,
        # the InternVL recipe: 5e8-element buckets, communication overlapped with the backward pass
        allgather_bucket_size=int(5e8),
        reduce_bucket_size=int(5e8),
        overlap_comm=True,
        contiguous_gradients=True),
)
