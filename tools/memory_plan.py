"""Per-GPU memory of a training config, before it is launched:

    python tools/memory_plan.py CONFIG [--gpus 8] [--gpu-memory 80] [--batch-size B] [--cfg-options ...]
        [--deepspeed {1,2,3}] [--deepspeed-precision P] [--deepspeed-offload] [--json]

Weights, gradients and optimizer state as the config's runner holds them (plain DDP or DeepSpeed ZeRO),
activations and the step's peak measured by running the real-size model on fake tensors; then whether it
fits, and the cheapest changes that make it fit. Exit status 0 if it fits, 3 if not.
"""
import argparse
import json
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout without install


def parse_args(argv=None):
    from internvit_dense.engine.cli import ConfigOptionsAction
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('config')
    p.add_argument('--gpus', type=int, default=8, help='GPUs (processes) of the run (default 8)')
    p.add_argument('--gpu-memory', type=float, default=80, help='memory of one GPU in GB as nvidia-smi shows it '
                   '(GiB; default 80)')
    p.add_argument('--batch-size', type=int, help="images per GPU (default: the config's train_dataloader)")
    p.add_argument('--cfg-options', nargs='+', action=ConfigOptionsAction, help='override config entries, as in train.py')
    p.add_argument('--deepspeed', type=int, choices=[1, 2, 3], metavar='STAGE', help='as tools/train.py --deepspeed')
    p.add_argument('--deepspeed-precision', choices=['fp32', 'bf16', 'fp16'])
    p.add_argument('--deepspeed-offload', action='store_true')
    p.add_argument('--no-suggestions', action='store_true', help='plan the config only (faster)')
    p.add_argument('--json', action='store_true', help='print the plan as JSON')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from internvit_dense.memory_plan.plan import check_plan_arguments
    try:  # before the config is read and the model traced: nothing to plan with these
        check_plan_arguments(args.gpus, args.gpu_memory, args.batch_size)
    except ValueError as e:
        raise SystemExit(f'tools/memory_plan.py: {e}') from None
    if not osp.isfile(args.config):
        raise SystemExit(f'config file not found: {args.config}')
    from mmengine.config import Config

    from internvit_dense.memory_plan import apply_overrides, plan_config
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    try:
        apply_overrides(cfg, args.deepspeed, args.deepspeed_precision, args.deepspeed_offload)
    except ValueError as e:
        raise SystemExit(f'{args.config}: {e}') from None
    plan = plan_config(cfg, gpus=args.gpus, gpu_memory_gb=args.gpu_memory, batch_size=args.batch_size,
                       suggest=not args.no_suggestions, name=args.config)
    print(json.dumps(plan.to_dict(), indent=2) if args.json else plan.format())
    return 0 if plan.fits else 3


if __name__ == '__main__':
    sys.exit(main())
