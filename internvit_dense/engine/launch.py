"""What tools/train.py and tools/test.py share: config loading, and the environment fixes
that a user of the OpenMMLab stack on a current torch should never meet."""
import ctypes
import os
import os.path as osp
from typing import Optional

import torch
from mmengine.config import Config, ConfigDict, DictAction


def allow_full_checkpoint_loading():
    """torch >= 2.6 loads with weights_only=True, which refuses the message-hub and
    numpy objects in mmengine's own checkpoints and so breaks --resume and load_from.
    Our entry points load only checkpoints the user points them at, as mmengine always did."""
    if os.environ.get('TORCH_FORCE_WEIGHTS_ONLY_LOAD', '0') in ('0', ''):
        os.environ.setdefault('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')


# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_MAX = 32 << 20  # glibc's ceiling for M_MMAP_THRESHOLD on 64-bit


def keep_freed_memory_on_cpu() -> bool:
    """Stops glibc from handing freed activations back to the OS between steps on CPU.

    Without CUDA, torch's tensors come straight from malloc. A transformer frees hundreds of MB of
    activations every step; glibc returns big blocks to the OS (munmap, heap trim) and the next
    step page-faults them back in: 4-7% of a 300M forward on this 2-core machine. With the mmap
    threshold at its ceiling and trimming off, freed blocks are reused instead; the process keeps
    its peak size, as a CUDA caching allocator does. The MALLOC_*_ environment variables, when
    set, win. Returns whether the setting took (False off glibc or with CUDA).
    """
    user_set = any(k in os.environ for k in ('MALLOC_TRIM_THRESHOLD_', 'MALLOC_MMAP_THRESHOLD_'))
    if user_set or torch.cuda.is_available():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))


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
    if cfg.launcher != 'none' and not torch.cuda.is_available():
        adapt_distributed_to_cpu(cfg)
    return cfg


def adapt_distributed_to_cpu(cfg: Config) -> None:
    """Several processes on a machine without CUDA (torchrun, tools/dist_train.sh).

    mmengine's launchers pin each process to a GPU, the configs ask for nccl, and its DDP
    wrapper is given a GPU index; each of these fails without CUDA.
    """
    guard_cuda_set_device()
    dist_cfg = cfg.setdefault('env_cfg', ConfigDict()).setdefault('dist_cfg', ConfigDict())
    if dist_cfg.get('backend', 'nccl') == 'nccl':
        dist_cfg['backend'] = 'gloo'
    if cfg.get('model_wrapper_cfg') is None and cfg.get('strategy') is None:
        # the keyword arguments mmengine's Runner gives DDP by default, but no device: CPU modules take none
        cfg.model_wrapper_cfg = dict(type='MMDistributedDataParallel', device_ids=None, broadcast_buffers=False,
                                     find_unused_parameters=cfg.get('find_unused_parameters', False))


def guard_cuda_set_device() -> None:
    """mmengine 0.10's pytorch and slurm launchers call torch.cuda.set_device unconditionally,
    which raises on a machine without CUDA; there, there is no device to select."""
    if getattr(torch.cuda.set_device, 'cpu_guard', False):
        return
    set_device = torch.cuda.set_device

    def guarded(device):
        if torch.cuda.is_available():
            set_device(device)

    guarded.cpu_guard = True
    torch.cuda.set_device = guarded


def shutdown_distributed() -> None:
    """Tears the process group down while every process is still alive.

    Left to the interpreter's exit, the communication threads are destroyed in no particular
    order, and now and then a finished run aborts ('terminate called without an active exception').
    """
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def resolve_resume(cfg: Config, resume: Optional[str], deepspeed: bool = False):
    """--resume alone continues from the work dir's latest checkpoint; --resume PATH from PATH.

    A DeepSpeed checkpoint is a folder (work_dir/iter_N.pth/), checked to be whole before training starts.
    """
    if resume is None:
        return
    cfg.resume = True
    if resume == 'auto':
        cfg.load_from = None
        last = osp.join(cfg.work_dir, 'last_checkpoint')
        if not osp.isfile(last):
            raise SystemExit(f'--resume: no checkpoint to resume from in {cfg.work_dir} (no last_checkpoint file); '
                             'start without --resume, or give --resume PATH')
        path = open(last).read().strip()
    else:
        # a folder for DeepSpeed, which mmengine splits into parent and name: no trailing slash
        path = osp.normpath(resume)
        cfg.load_from = path
    if deepspeed:
        from internvit_dense.engine.deepspeed import check_zero_checkpoint
        try:
            check_zero_checkpoint(path, world_size=int(os.environ.get('WORLD_SIZE', '1')))
        except ValueError as e:
            raise SystemExit(f'--resume: {e}') from None
    elif not osp.isfile(path):
        raise SystemExit(f'--resume: checkpoint {path} does not exist')
