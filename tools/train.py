"""Trains a model from a config: python tools/train.py CONFIG [--work-dir DIR] [--resume [PATH]] [--amp [bf16|fp16]]
[--deepspeed {1,2,3} [--deepspeed-precision {fp32,bf16,fp16}] [--deepspeed-offload]].

A config with a DeepSpeed ``strategy`` (configs/_base_/deepspeed/*.py) or the --deepspeed flag trains
with mmengine's FlexibleRunner and DeepSpeedStrategy; every other config with mmengine's Runner, as before.
"""
import argparse
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)  # run from a checkout without install

from internvit_dense.engine.cli import add_common_args, load_config, setup_entry_point  # noqa: E402

DEEPSPEED_BASES = osp.join(ROOT, 'configs', '_base_', 'deepspeed')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a segmentor/detector with an InternViT backbone')
    add_common_args(parser)
    parser.add_argument('--resume', nargs='?', const='auto', default=None,
                        help='resume from the latest checkpoint in the work dir, or from the given one')
    parser.add_argument('--amp', nargs='?', const='auto', choices=['auto', 'bf16', 'fp16'],
                        help='automatic mixed precision (not with DeepSpeed): bf16 where the device has it (CPUs, '
                             'GPUs from Ampere on; the dtype a config names is kept), else fp16 with a dynamic '
                             'loss scale; --amp bf16 / --amp fp16 to choose')
    ds = parser.add_argument_group('DeepSpeed', 'train with ZeRO (FlexibleRunner + DeepSpeedStrategy); a config '
                                   'that inherits configs/_base_/deepspeed/*.py needs no flag')
    ds.add_argument('--deepspeed', type=int, choices=[1, 2, 3], metavar='STAGE',
                    help='ZeRO stage 1, 2 or 3 (the settings of configs/_base_/deepspeed/zeroN.py)')
    ds.add_argument('--deepspeed-precision', choices=['fp32', 'bf16', 'fp16'],
                    help="DeepSpeed's precision (default: the config's, else fp32)")
    ds.add_argument('--deepspeed-offload', action='store_true',
                    help='keep the optimizer state in CPU memory (ZeRO-Offload)')
    parser.add_argument('--no-memory-plan', action='store_true',
                        help='on GPUs, do not stop a run that tools/memory_plan.py says cannot fit')
    return parser.parse_args(argv)


def main(argv=None):
    setup_entry_point()
    args = parse_args(argv)
    cfg = load_config(args)

    from internvit_dense.engine import deepspeed as ds
    try:
        base = None
        if args.deepspeed is not None:
            from mmengine.config import Config
            base = Config.fromfile(osp.join(DEEPSPEED_BASES, f'zero{args.deepspeed}.py')).strategy.to_dict()
        ds.apply_deepspeed_options(cfg, base, args.deepspeed_precision, args.deepspeed_offload)
        deepspeed = ds.uses_deepspeed(cfg)
        if deepspeed and args.amp:
            raise ValueError('--amp is AmpOptimWrapper, which DeepSpeed replaces: use --deepspeed-precision bf16 '
                             '(or fp16)')
        if deepspeed:
            ds.prepare_deepspeed(cfg)
    except ValueError as e:
        raise SystemExit(f'{args.config}: {e}') from None

    from internvit_dense.engine.cli import process_rank
    from internvit_dense.engine.training import settle_amp_config, train, use_amp
    try:
        precision = use_amp(cfg, args.amp) if args.amp else settle_amp_config(cfg)
    except ValueError as e:
        raise SystemExit(f'{args.config}: {e}') from None
    if precision and process_rank() == 0:
        print(precision, flush=True)
    checks = []
    if not args.no_memory_plan:
        from internvit_dense.memory_plan import stop_if_it_cannot_fit
        checks.append(stop_if_it_cannot_fit)  # CUDA machines only: stops a run that cannot fit, before the build
    train(cfg, args.config, args.resume, deepspeed, before_build=checks)


if __name__ == '__main__':
    main()
