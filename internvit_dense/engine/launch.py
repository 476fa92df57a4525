"""What tools/train.py and tools/test.py share: config loading, and the environment fixes
that a user of the OpenMMLab stack on a current torch should never meet."""
import os
import os.path as osp
from typing import Optional

from mmengine.config import Config, DictAction


def allow_full_checkpoint_loading():
    """torch >= 2.6 loads with weights_only=True, which refuses the message-hub and
    numpy objects in mmengine's own checkpoints and so breaks --resume and load_from.
    Our entry points load only checkpoints the user points them at, as mmengine always did."""
    if os.environ.get('TORCH_FORCE_WEIGHTS_ONLY_LOAD', '0') in ('0', ''):
        os.environ.setdefault('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')


def add_common_args(parser):
    parser.add_argument('config', help='config file')
    parser.add_argument('--work-dir', help='where logs and checkpoints go (default: work_dirs/<config name>)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. train_cfg.max_iters=100')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def load_config(args) -> Config:
    if not osp.isfile(args.config):
        raise SystemExit(f'config file not found: {args.config}')
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('work_dirs', osp.splitext(osp.basename(args.config))[0])
    return cfg


def resolve_resume(cfg: Config, resume: Optional[str]):
    """--resume alone continues from the work dir's latest checkpoint; --resume PATH from PATH."""
    if resume is None:
        return
    cfg.resume = True
    if resume == 'auto':
        cfg.load_from = None
        last = osp.join(cfg.work_dir, 'last_checkpoint')
        if not osp.isfile(last):
            raise SystemExit(f'--resume: no checkpoint to resume from in {cfg.work_dir} (no last_checkpoint file); '
                             'start without --resume, or give --resume PATH')
    else:
        if not osp.isfile(resume):
            raise SystemExit(f'--resume: checkpoint {resume} does not exist')
        cfg.load_from = resume
