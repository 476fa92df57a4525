"""What the command-line tools share: process setup, arguments, config loading, resume resolution."""
import difflib
import inspect
import os
import os.path as osp
import warnings
from typing import List, Optional

import torch
from mmengine.config import Config, ConfigDict, DictAction

from .device_env import check_device_environment
from .workarounds import apply_process_workarounds


def setup_entry_point() -> None:
    """The first call of every tool's main(): the process-level workarounds (engine/workarounds.py), and
    the machine's GPU stack checked (engine/device_env.py: torch that cannot use the GPUs nvidia-smi
    lists is refused, mmcv ops without CUDA on a GPU machine named)."""
    apply_process_workarounds()
    check_device_environment()


def add_common_args(parser):
    parser.add_argument('config', help='config file')
    parser.add_argument('--work-dir', help='where logs and checkpoints go (default: work_dirs/<config name>)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. train_cfg.max_iters=100')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def known_top_level_keys() -> set:
    """The top-level config keys mmengine's runners read, and the ones OpenMMLab configs use for themselves."""
    from mmengine.runner import FlexibleRunner, Runner
    keys = {'_base_', 'custom_imports', 'runner_type', 'tta_model', 'tta_pipeline', 'train_pipeline',
            'test_pipeline', 'val_pipeline', 'data_root', 'dataset_type', 'vis_backends', 'backend_args',
            'find_unused_parameters', 'filename'}
    for runner in (Runner, FlexibleRunner):
        keys |= set(inspect.signature(runner.__init__).parameters) - {'self'}
    return keys


def near_miss_keys(cfg: Config) -> List[str]:
    """Top-level keys that look like misspelt known ones (``load_fromm``): mmengine ignores unknown keys."""
    known = known_top_level_keys()
    notes = []
    for key in cfg.keys():
        if key in known or key.startswith('_'):
            continue
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.85)
        if close:
            notes.append(f'{cfg.filename}: top-level key {key!r} is not one mmengine reads; did you mean '
                         f'{close[0]!r}? (unknown keys are ignored)')
    return notes


def load_config(args) -> Config:
    if not osp.isfile(args.config):
        raise SystemExit(f'config file not found: {args.config}')
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    for note in near_miss_keys(cfg):
        warnings.warn(note, stacklevel=2)
    if args.work_dir:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('work_dirs', osp.splitext(osp.basename(args.config))[0])
    if cfg.launcher != 'none' and not torch.cuda.is_available():
        adapt_distributed_to_cpu(cfg)
    return cfg


def adapt_distributed_to_cpu(cfg: Config) -> None:
    """Several processes on a machine without CUDA (torchrun, tools/dist_train.sh).

    The configs ask for nccl, and mmengine's DDP wrapper is given a GPU index; both fail without
    CUDA (the launchers' torch.cuda.set_device is guarded in engine/workarounds.py).
    """
    dist_cfg = cfg.setdefault('env_cfg', ConfigDict()).setdefault('dist_cfg', ConfigDict())
    if dist_cfg.get('backend', 'nccl') == 'nccl':
        dist_cfg['backend'] = 'gloo'
    if cfg.get('model_wrapper_cfg') is None and cfg.get('strategy') is None:
        # the keyword arguments mmengine's Runner gives DDP by default, but no device: CPU modules take none
        cfg.model_wrapper_cfg = dict(type='MMDistributedDataParallel', device_ids=None, broadcast_buffers=False,
                                     find_unused_parameters=cfg.get('find_unused_parameters', False))


def shutdown_distributed() -> None:
    """Tears the process group down while every process is still alive.

    Left to the interpreter's exit, the communication threads are destroyed in no particular
    order, and now and then a finished run aborts ('terminate called without an active exception').
    """
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def process_rank() -> int:
    """This process's rank before torch.distributed is up, from the launcher's environment."""
    for key in ('RANK', 'SLURM_PROCID', 'OMPI_COMM_WORLD_RANK'):
        if key in os.environ:
            return int(os.environ[key])
    return 0


def launcher_world_size(launcher: Optional[str]) -> int:
    """The run's number of processes before torch.distributed is up, from the launcher's environment.

    Under Slurm, WORLD_SIZE is set by mmengine's Slurm launcher only when the Runner starts
    (``mmengine.dist.utils._init_dist_slurm``), after the checks that need it: Slurm's own
    SLURM_NTASKS is read there (and SLURM_PROCID is the rank, see :func:`process_rank`).
    """
    if launcher == 'slurm':
        if 'SLURM_NTASKS' not in os.environ:
            raise SystemExit('--launcher slurm, but SLURM_NTASKS is not set: run it inside a Slurm job step '
                             '(srun, as tools/slurm_train.sh does)')
        return int(os.environ['SLURM_NTASKS'])
    if launcher == 'mpi' and 'OMPI_COMM_WORLD_SIZE' in os.environ:
        return int(os.environ['OMPI_COMM_WORLD_SIZE'])
    return int(os.environ.get('WORLD_SIZE', '1'))


def launcher_local_rank(launcher: Optional[str]) -> int:
    """This process's index on its machine (which GPU it takes), before torch.distributed is up."""
    if launcher == 'slurm' and 'SLURM_LOCALID' in os.environ:
        return int(os.environ['SLURM_LOCALID'])
    if launcher == 'mpi' and 'OMPI_COMM_WORLD_LOCAL_RANK' in os.environ:
        return int(os.environ['OMPI_COMM_WORLD_LOCAL_RANK'])
    return int(os.environ.get('LOCAL_RANK', '0'))


def resolve_resume(cfg: Config, resume: Optional[str], deepspeed: bool = False) -> None:
    """--resume alone continues from the work dir's latest whole checkpoint (looked up inside the work
    dir, whatever absolute path mmengine recorded); --resume PATH from PATH, which must be whole.

    A DeepSpeed checkpoint is a folder (work_dir/iter_N.pth/), checked to be whole before training starts.
    """
    from .work_dir import check_resume_file, find_resume_checkpoint
    if resume is None:
        return
    cfg.resume = True
    try:
        if resume == 'auto':
            path, notes = find_resume_checkpoint(cfg.work_dir)
            for note in notes:
                warnings.warn(note, stacklevel=2)
        else:
            # a folder for DeepSpeed, which mmengine splits into parent and name: no trailing slash
            path = osp.normpath(resume)
            check_resume_file(path)
    except FileNotFoundError as e:
        raise SystemExit(f'--resume: {e}' if not str(e).startswith('--resume') else str(e)) from None
    # given explicitly, mmengine resumes from it rather than from the (absolute) path in last_checkpoint
    cfg.load_from = path
    if deepspeed:
        from internvit_dense.engine.deepspeed import check_zero_checkpoint
        try:
            check_zero_checkpoint(path, world_size=launcher_world_size(cfg.get('launcher')))
        except ValueError as e:
            raise SystemExit(f'--resume: {e}') from None
