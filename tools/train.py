"""Trains a model from a config: python tools/train.py CONFIG [--work-dir DIR] [--resume [PATH]] [--amp]
[--deepspeed {1,2,3} [--deepspeed-precision {fp32,bf16,fp16}] [--deepspeed-offload]].

A config with a DeepSpeed ``strategy`` (configs/_base_/deepspeed/*.py) or the --deepspeed flag trains
with mmengine's FlexibleRunner and DeepSpeedStrategy; every other config with mmengine's Runner, as before.
"""
import argparse
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)  # run from a checkout without install

from internvit_dense.engine.cli import add_common_args, load_config, process_rank, resolve_resume, \
    setup_entry_point, shutdown_distributed  # noqa: E402

DEEPSPEED_BASES = osp.join(ROOT, 'configs', '_base_', 'deepspeed')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a segmentor/detector with an InternViT backbone')
    add_common_args(parser)
    parser.add_argument('--resume', nargs='?', const='auto', default=None,
                        help='resume from the latest checkpoint in the work dir, or from the given one')
    parser.add_argument('--amp', action='store_true', help='automatic mixed precision (not with DeepSpeed)')
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

    if args.amp:
        wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if wrapper != 'AmpOptimWrapper':
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    from internvit_dense.engine.fileio import CheckpointWriteError
    from internvit_dense.engine.hooks import NonFiniteError, add_safety_hooks
    from internvit_dense.engine.work_dir import WorkDirBusy, WorkDirLock
    lock = WorkDirLock(cfg.work_dir) if process_rank() == 0 else None  # one lock per run, held by rank 0
    if lock is not None:
        try:
            for note in lock.acquire():
                print(f'warning: {note}', file=sys.stderr)
        except WorkDirBusy as e:
            raise SystemExit(str(e)) from None
    try:
        resolve_resume(cfg, args.resume, deepspeed=deepspeed)
        if not args.no_memory_plan:
            from internvit_dense.memory_plan import stop_if_it_cannot_fit
            stop_if_it_cannot_fit(cfg, args.config)  # CUDA machines only: before the model is built
        add_safety_hooks(cfg)

        from mmengine.registry import RUNNERS
        from mmengine.runner import FlexibleRunner, Runner
        if 'runner_type' in cfg:
            runner = RUNNERS.build(cfg)
        elif deepspeed:
            # runner_type stays out of the config (and of the copy saved in the work dir), so that
            # tools/test.py evaluates with the plain Runner
            runner = FlexibleRunner.from_cfg(cfg)
        else:
            runner = Runner.from_cfg(cfg)
        try:
            runner.train()
        except (NonFiniteError, CheckpointWriteError) as e:
            raise SystemExit(f'training stopped: {e}') from None
        shutdown_distributed()
    finally:
        if lock is not None:
            lock.release()
    print(f'training finished: checkpoints and logs in {osp.abspath(cfg.work_dir)}')


if __name__ == '__main__':
    main()
