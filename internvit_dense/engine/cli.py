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


class ConfigOptionsAction(DictAction):
    """mmengine's ``DictAction`` (``--cfg-options key=value ...``), except that a value that is one string
    keeps its spaces: mmengine removes every space of every value (``data_root="/data/ADE 20k"`` became
    ``/data/ADE20k``), which is right for ``[1, 2]`` but leaves no way to pass such a path. Lists and
    tuples are parsed as mmengine parses them (quoted or not); another quoted value is taken as it is, quotes
    removed."""

    @staticmethod
    def _parse_iterable(val: str):
        text = val.strip()
        if len(text) >= 2 and text[0] == text[-1] and text[0] in '"\'' and text[1:2] not in '([':
            return text[1:-1]
        if text[:1] not in '([' and ',' not in text:
            return DictAction._parse_int_float_bool(text)
        return DictAction._parse_iterable(val)


def add_common_args(parser):
    parser.add_argument('config', help='config file')
    parser.add_argument('--work-dir', help='where logs and checkpoints go (default: work_dirs/<config name>)')
    parser.add_argument('--cfg-options', nargs='+', action=ConfigOptionsAction,
                        help='override config entries, e.g. train_cfg.max_iters=100; quote a value with spaces: '
                        'train_dataloader.dataset.data_root="/data/ADE 20k"')
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


# The arguments mmengine's Runner.setup_env reads from env_cfg (it ignores any other key).
ENV_CFG_KEYS = {'cudnn_benchmark', 'mp_cfg', 'dist_cfg', 'resource_limit'}
# Sections built from a config dict whose keys become keyword arguments: the registry of their type.
BUILT_SECTIONS = {'train_cfg': 'LOOPS', 'val_cfg': 'LOOPS', 'test_cfg': 'LOOPS', 'val_evaluator': 'METRICS',
                  'test_evaluator': 'METRICS', 'log_processor': 'LOG_PROCESSORS', 'visualizer': 'VISUALIZERS'}
DEFAULT_CLASSES = {'val_cfg': 'ValLoop', 'test_cfg': 'TestLoop', 'log_processor': 'LogProcessor'}


def _arguments_of(cls) -> set:
    """The keyword arguments a class's constructors (along its MRO) name."""
    names = set()
    for klass in getattr(cls, '__mro__', [cls]):
        init = klass.__dict__.get('__init__') if isinstance(klass, type) else klass
        if init is None:
            continue
        try:
            params = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):
            continue
        names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return names - {'self'}


def _built_class(section: str, spec: dict, scope: Optional[str]):
    import mmengine.registry as registries
    name = spec.get('type')
    if name is None and section == 'train_cfg':
        name = 'IterBasedTrainLoop' if 'max_iters' in spec else 'EpochBasedTrainLoop'
    name = name if name is not None else DEFAULT_CLASSES.get(section)
    if not isinstance(name, str):
        return name
    registry = getattr(registries, BUILT_SECTIONS.get(section, 'HOOKS'))
    try:
        with registry.switch_scope_and_registry(scope) as found:
            return found.get(name)
    except Exception:  # an unknown type fails later, when the Runner builds it, with mmengine's message
        return None


def near_miss_nested_keys(cfg: Config) -> List[str]:
    """Keys of env_cfg, the loops, evaluators and hooks that look like misspelt arguments (``env_cfg.
    cudnn_benchmarkk``, ``val_evaluator.iou_metricss``): mmengine ignores the first, and classes taking
    ``**kwargs`` (mmseg's IoUMetric) swallow the second without a word."""
    scope = cfg.get('default_scope')
    specs = [('env_cfg', cfg.get('env_cfg'), ENV_CFG_KEYS)]
    for section in BUILT_SECTIONS:
        value = cfg.get(section)
        for i, spec in enumerate(value if isinstance(value, (list, tuple)) else [value]):
            name = f'{section}[{i}]' if isinstance(value, (list, tuple)) else section
            specs.append((name, spec, section))
    for name, spec in (cfg.get('default_hooks') or {}).items():
        specs.append((f'default_hooks.{name}', spec, 'hook'))
    for i, spec in enumerate(cfg.get('custom_hooks') or []):
        specs.append((f'custom_hooks[{i}]', spec, 'hook'))
    notes = []
    for where, spec, kind in specs:
        if not isinstance(spec, dict):
            continue
        if isinstance(kind, set):
            known, owner = kind, 'mmengine'
        else:
            cls = _built_class(kind, spec, scope)
            if cls is None:
                continue
            known, owner = _arguments_of(cls) | {'type', 'by_epoch'}, getattr(cls, '__name__', str(cls))
            if cls.__name__ in ('CheckpointHook', 'SafeCheckpointHook'):
                from mmengine.runner import Runner
                known |= _arguments_of(Runner.save_checkpoint)  # passed on to it
        for key in spec:
            if key in known or not isinstance(key, str):
                continue
            close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.8)
            if close:
                notes.append(f'{cfg.filename}: {where}.{key} is not an argument {owner} reads; did you mean '
                             f'{where}.{close[0]}? (unknown keys are ignored)')
    return notes


def _dotted_get(cfg, key: str):
    node = cfg._cfg_dict if isinstance(cfg, Config) else cfg
    for part in key.split('.'):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, (list, tuple)) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def check_option_types(cfg: Config, options: dict) -> None:
    """``--cfg-options train_cfg.max_iters=abc``: a word where the config holds a number (or a flag) fails
    deep inside the Runner ('invalid literal for int()'); named here, with the config's value."""
    for key, value in options.items():
        current = _dotted_get(cfg, key)
        if current is None or not isinstance(value, str):  # a number may become a list (in_index=[0, 1])
            continue
        if isinstance(current, bool):
            raise SystemExit(f'--cfg-options {key}={value!r}: the config holds True/False there ({current!r})')
        if isinstance(current, (int, float)):
            raise SystemExit(f'--cfg-options {key}={value!r}: the config holds a number there ({current!r}), '
                             f'{value!r} is not one')


def load_config(args) -> Config:
    if not osp.isfile(args.config):
        raise SystemExit(f'config file not found: {args.config}')
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options:
        check_option_types(cfg, args.cfg_options)
        cfg.merge_from_dict(args.cfg_options)
    for note in near_miss_keys(cfg) + near_miss_nested_keys(cfg):
        warnings.warn(note, stacklevel=2)
    if args.work_dir and osp.exists(args.work_dir) and not osp.isdir(args.work_dir):
        raise SystemExit(f'--work-dir {args.work_dir} is a file, not a folder: give a folder (it is created if '
                         'missing) where logs and checkpoints go')
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
