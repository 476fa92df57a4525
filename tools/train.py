"""Trains a model from a config: python tools/train.py CONFIG [--work-dir DIR] [--resume [PATH]] [--amp]."""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a checkout without install

from internvit_dense.engine.launch import add_common_args, allow_full_checkpoint_loading, load_config, \
    resolve_resume  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a segmentor/detector with an InternViT backbone')
    add_common_args(parser)
    parser.add_argument('--resume', nargs='?', const='auto', default=None,
                        help='resume from the latest checkpoint in the work dir, or from the given one')
    parser.add_argument('--amp', action='store_true', help='automatic mixed precision')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    allow_full_checkpoint_loading()
    cfg = load_config(args)
    if args.amp:
        wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if wrapper != 'AmpOptimWrapper':
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    resolve_resume(cfg, args.resume)

    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    runner.train()
    print(f'training finished: checkpoints and logs in {osp.abspath(cfg.work_dir)}')


if __name__ == '__main__':
    main()
