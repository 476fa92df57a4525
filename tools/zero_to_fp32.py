"""Consolidates a DeepSpeed (ZeRO 1/2/3) checkpoint into one fp32 state dict that tools/test.py loads:

    python tools/zero_to_fp32.py work_dirs/RUN/iter_80000.pth [OUT.pth]

The input is the folder mmengine's DeepSpeedStrategy writes (work_dir/iter_N.pth/, one optimizer shard
per process); the output (default: work_dirs/RUN/iter_80000_fp32.pth) is a regular mmengine checkpoint,
``{'state_dict': ..., 'meta': ...}``, with every parameter and buffer, frozen ones included, and the
run's meta (iteration, dataset classes and palette). The fp32 master weights are gathered from the
optimizer shards by DeepSpeed's own ``deepspeed.utils.zero_to_fp32``; no GPU and no process group needed.
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout without install


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='DeepSpeed ZeRO checkpoint -> single fp32 state dict')
    parser.add_argument('checkpoint', help='DeepSpeed checkpoint folder, e.g. work_dirs/RUN/iter_80000.pth')
    parser.add_argument('out', nargs='?', help='output file (default: the folder name with _fp32.pth)')
    return parser.parse_args(argv)


def default_output(checkpoint: str) -> str:
    stem = checkpoint.rstrip('/')
    if stem.endswith('.pth'):
        stem = stem[:-len('.pth')]
    return stem + '_fp32.pth'


def consolidate(checkpoint: str) -> dict:
    """The mmengine checkpoint dict for a DeepSpeed checkpoint folder."""
    import torch
    from internvit_dense.engine.device_env import deepspeed_unavailable
    reason = deepspeed_unavailable()
    if reason:
        raise ValueError(reason)
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint, get_model_state_files

    from internvit_dense.checkpoint import torch_load
    from internvit_dense.engine.deepspeed import check_zero_checkpoint
    check_zero_checkpoint(checkpoint)  # a folder with model states and optimizer shards, or a clear error

    checkpoint = checkpoint.rstrip('/')
    parent, tag = osp.split(checkpoint)
    state_dict = get_fp32_state_dict_from_zero_checkpoint(parent or '.', tag=tag)

    # Rank 0's model-states file also holds what mmengine stored beside the weights (meta, ...)
    # and the buffers in their own dtypes: DeepSpeed's helper returns every buffer as float,
    # integer counters (BatchNorm's num_batches_tracked) included.
    rank0 = sorted(get_model_state_files(checkpoint))[0]
    saved = torch_load(rank0)
    missing = []
    for name, value in saved['module'].items():
        if not torch.is_tensor(value):  # a module's extra state (a LoRA backbone's record of its base weights)
            state_dict[name] = value
        elif name in state_dict:
            if not value.is_floating_point():
                state_dict[name] = value.clone()
        elif value.numel() > 0:
            # Frozen parameters under ZeRO-1: DeepSpeed records them (frozen_param_shapes/_fragments) from
            # stage 2 on only, so its helper leaves them out; below stage 3 the module state holds every
            # parameter whole, and a frozen one is exactly what training started from
            state_dict[name] = value.clone()
        else:
            missing.append(name)  # a stage-3 placeholder the helper should have filled
    if missing:
        raise ValueError(f'{checkpoint}: the consolidated weights lack {len(missing)} tensors of the model, '
                         f'e.g. {missing[:6]}')
    meta = dict(saved.get('meta') or {})
    meta['deepspeed_checkpoint'] = osp.abspath(checkpoint)
    return {'state_dict': state_dict, 'meta': meta}


def main(argv=None):
    args = parse_args(argv)
    from internvit_dense.engine.cli import setup_entry_point
    setup_entry_point()
    if not osp.isdir(args.checkpoint):
        hint = ' (already a single file: tools/test.py takes it as it is)' if osp.isfile(args.checkpoint) else ''
        raise SystemExit(f'{args.checkpoint} is not a DeepSpeed checkpoint folder{hint}')
    out = args.out or default_output(args.checkpoint)
    try:
        ckpt = consolidate(args.checkpoint)
    except ValueError as e:
        raise SystemExit(str(e)) from None

    import torch
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    tmp = out + '.tmp'
    torch.save(ckpt, tmp)
    os.replace(tmp, out)  # never a half-written file under the final name
    tensors = [v for v in ckpt['state_dict'].values() if torch.is_tensor(v)]  # not a LoRA record (extra state)
    numel = sum(v.numel() for v in tensors if v.is_floating_point())
    print(f'{len(tensors)} tensors ({numel:,} floats) from {args.checkpoint} -> {out}')


if __name__ == '__main__':
    main()
