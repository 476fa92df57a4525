"""DeepSpeed ZeRO training on stock mmengine (FlexibleRunner + DeepSpeedStrategy + DeepSpeedOptimWrapper).

A config trains with DeepSpeed when it has ``strategy = dict(type='DeepSpeedStrategy', ...)``
(``configs/_base_/deepspeed/*.py``, or ``tools/train.py --deepspeed N``). Everything else in the
config stays as written for plain training; :func:`prepare_deepspeed` translates the parts that
mmengine's DeepSpeed classes take differently, and sets up what DeepSpeed needs from the process:

- ``optim_wrapper`` becomes a ``DeepSpeedOptimWrapper`` with the same optimizer, constructor and
  ``paramwise_cfg``, so the layer-wise lr decay groups (and the frozen parameters left out of them)
  are exactly those of a plain run; DeepSpeed receives the built torch optimizer, which needs no
  compiled op (a DeepSpeed-side optimizer would compile one first).
  ``clip_grad=dict(max_norm=x)`` becomes DeepSpeed's ``gradient_clipping`` (and no ``clip_grad``
  turns DeepSpeed's default clipping at 1.0 off), ``accumulative_counts`` its
  ``gradient_accumulation_steps``.
- a single process (``--launcher none``) gets the rendezvous environment DeepSpeed reads
  (otherwise it goes looking for MPI);
- bf16/fp16 strategies get the images cast to the model's precision (``inputs_to_half``) and the
  buffers in it too (BatchNorm); in fp16 mmseg's cross-entropy losses are averaged by mmengine
  instead of summed in fp16 (:func:`fp16_safe_segmentation_losses`);
- on a machine without CUDA the process group uses DeepSpeed's CPU backend (gloo) and the
  shared-memory collective op, which only tensor-parallel inference uses, is not JIT-compiled.
"""
from __future__ import annotations

import glob
import logging
import os
import os.path as osp
import socket
from typing import List, Optional

from mmengine.config import Config, ConfigDict

STRATEGY_TYPE = 'DeepSpeedStrategy'
OPTIM_WRAPPER_TYPE = 'DeepSpeedOptimWrapper'
PRECISIONS = ('fp32', 'bf16', 'fp16')
# DeepSpeed's checkpoint layout (engine.save_checkpoint) inside mmengine's iter_N.pth folder
_MODEL_STATES = ('mp_rank_*_model_states.pt', 'zero_pp_rank_*_mp_rank_*_model_states.pt')
_OPTIM_STATES = '*_optim_states.pt'


def uses_deepspeed(cfg: Config) -> bool:
    strategy = cfg.get('strategy')
    if not isinstance(strategy, dict):
        return False
    kind = strategy.get('type')
    return (kind if isinstance(kind, str) else getattr(kind, '__name__', '')) == STRATEGY_TYPE


# ------------------------------------------------------------------ config
def apply_deepspeed_options(cfg: Config, base_strategy: Optional[dict] = None, precision: Optional[str] = None,
                            offload: bool = False) -> None:
    """What ``tools/train.py --deepspeed N [--deepspeed-precision P] [--deepspeed-offload]`` does.

    ``base_strategy`` (the ``strategy`` of ``configs/_base_/deepspeed/zeroN.py``) gives a config
    without a DeepSpeed strategy one; a config that has one keeps its precision and other settings
    and takes the ZeRO settings of ``base_strategy``.
    """
    if base_strategy is not None:
        if uses_deepspeed(cfg):
            cfg.strategy.zero_optimization = ConfigDict(base_strategy['zero_optimization'])
        else:
            cfg.strategy = ConfigDict(base_strategy)
    if (precision or offload) and not uses_deepspeed(cfg):
        raise ValueError('--deepspeed-precision and --deepspeed-offload need DeepSpeed: give --deepspeed {1,2,3} '
                         'or a config that inherits configs/_base_/deepspeed/*.py')
    if precision is not None:
        set_precision(cfg.strategy, precision)
    if offload:
        cfg.strategy.zero_optimization.offload_optimizer = dict(device='cpu', pin_memory=True)
        # DeepSpeed refuses a torch optimizer with offload unless told to accept it
        cfg.strategy.setdefault('config', {})['zero_force_ds_cpu_optimizer'] = False


def set_precision(strategy: dict, precision: str) -> None:
    """fp32, or bf16/fp16 weights and activations with fp32 master weights in the optimizer."""
    if precision not in PRECISIONS:
        raise ValueError(f'precision must be one of {PRECISIONS}, got {precision!r}')
    strategy.pop('bf16', None)
    strategy.pop('fp16', None)
    strategy.pop('inputs_to_half', None)
    data_types = (strategy.get('config') or {}).get('data_types') or {}
    data_types.pop('buffer_dtype', None)
    if precision != 'fp32':
        strategy[precision] = dict(enabled=True)
        complete_half_precision(strategy)


def complete_half_precision(strategy: dict) -> None:
    """What a bf16/fp16 strategy needs besides ``enabled``, unless the config says otherwise."""
    precision = precision_of(strategy)
    if precision == 'fp32':
        return
    # the data preprocessor's float32 images must match the half-precision weights
    strategy.setdefault('inputs_to_half', ['inputs'])
    # DeepSpeed >= 0.17 keeps buffers in fp32, and BatchNorm refuses half-precision weights with
    # fp32 running statistics: buffers follow the weights, as in the DeepSpeed InternVL used
    config = strategy.setdefault('config', ConfigDict())
    config.setdefault('data_types', ConfigDict()).setdefault('buffer_dtype', precision)


def fp16_safe_segmentation_losses(cfg: Config) -> List[str]:
    """mmseg's cross-entropy sums the per-pixel losses in the logits' precision; in fp16 the sum
    of a few tens of thousands of pixels passes 65504 and the loss is inf, every step is skipped as
    an overflow, and nothing trains. With ``reduction='none'`` mmseg returns the per-pixel losses
    and mmengine's ``parse_losses`` averages them (accumulating in fp32): the same value, as long
    as the loss is a plain mean over all pixels (no class weights, no ``avg_non_ignore``).

    Returns the losses it could not make safe, for a warning.
    """
    model = cfg.get('model') or {}
    unsafe = []
    for head_key in ('decode_head', 'auxiliary_head'):
        heads = model.get(head_key)
        for index, head in enumerate(heads if isinstance(heads, list) else [heads]):
            if not isinstance(head, dict) or 'loss_decode' not in head:
                continue
            loss_cfgs = head['loss_decode']
            for loss in loss_cfgs if isinstance(loss_cfgs, list) else [loss_cfgs]:
                plain_mean = (loss.get('type') == 'CrossEntropyLoss' and not loss.get('use_sigmoid', False)
                              and not loss.get('use_mask', False) and loss.get('class_weight') is None
                              and not loss.get('avg_non_ignore', False))
                if plain_mean and loss.get('reduction', 'mean') in ('mean', 'none'):
                    loss['reduction'] = 'none'
                else:
                    unsafe.append(f'model.{head_key}[{index}] {loss.get("type")}')
    return unsafe


def precision_of(strategy: dict) -> str:
    for name in ('bf16', 'fp16'):
        if (strategy.get(name) or {}).get('enabled', False):
            return name
    return 'fp32'


def to_deepspeed_optim_wrapper(cfg: Config) -> None:
    """Rewrites a plain ``optim_wrapper`` for DeepSpeed, moving what DeepSpeed owns into ``strategy``."""
    wrapper = cfg.get('optim_wrapper')
    if not isinstance(wrapper, dict) or 'optimizer' not in wrapper:
        raise ValueError('DeepSpeed training needs optim_wrapper=dict(optimizer=...) in the config')
    kind = wrapper.get('type', 'OptimWrapper')
    if kind == 'AmpOptimWrapper':
        raise ValueError('DeepSpeed does mixed precision itself: drop AmpOptimWrapper/--amp and set bf16 or fp16 in '
                         'the DeepSpeed strategy (configs/_base_/deepspeed/*_bf16.py, or --deepspeed-precision bf16)')
    if kind not in ('OptimWrapper', OPTIM_WRAPPER_TYPE):
        raise ValueError(f'DeepSpeed training cannot use optim_wrapper type {kind}: DeepSpeed steps the optimizer '
                         f'itself through {OPTIM_WRAPPER_TYPE}')
    strategy = cfg.strategy

    clip = wrapper.pop('clip_grad', None)
    if clip:
        if clip.get('type', 'norm') != 'norm' or float(clip.get('norm_type', 2)) != 2.0 or 'max_norm' not in clip:
            raise ValueError(f'DeepSpeed clips the global L2 norm of the gradients only; clip_grad={dict(clip)} '
                             'has no DeepSpeed equivalent')
        _move(strategy, 'gradient_clipping', float(clip['max_norm']), 'optim_wrapper.clip_grad.max_norm')
    else:
        # DeepSpeed (0.19) clips at norm 1.0 unless told otherwise; a config
        # without clip_grad trains unclipped, and must do so under DeepSpeed too
        strategy.setdefault('gradient_clipping', 0.0)

    counts = wrapper.pop('accumulative_counts', 1)
    if counts != 1:
        _move(strategy, 'gradient_accumulation_steps', int(counts), 'optim_wrapper.accumulative_counts')

    allow_elementwise_optimizer(strategy, wrapper.optimizer)

    unknown = sorted(set(wrapper) - {'type', 'optimizer', 'constructor', 'paramwise_cfg'})
    if unknown:
        raise ValueError(f'{OPTIM_WRAPPER_TYPE} takes no {unknown}; remove them from optim_wrapper')
    wrapper.type = OPTIM_WRAPPER_TYPE


# torch optimizers whose update of each element reads that element's gradient and state only: ZeRO's flattening
# and partitioning of the parameters leaves their step unchanged, though DeepSpeed lists only Adam(W) and
# Adagrad as tested (optimizers with per-tensor quantities, LAMB's or LARS's trust ratio, stay refused)
ELEMENTWISE_OPTIMIZERS = ('SGD',)


def allow_elementwise_optimizer(strategy: dict, optimizer: dict) -> None:
    """DeepSpeed refuses every optimizer outside its tested list under ZeRO ('untested ZeRO Optimizer') unless
    ``zero_allow_untested_optimizer``: set for the elementwise ones (the linear probe's SGD)."""
    kind = optimizer.get('type')
    name = kind if isinstance(kind, str) else getattr(kind, '__name__', '')
    if name.rpartition('.')[2] in ELEMENTWISE_OPTIMIZERS:
        config = strategy.setdefault('config', ConfigDict())
        if isinstance(config, dict):  # a JSON file's path is the user's to complete (DeepSpeed's message says how)
            config.setdefault('zero_allow_untested_optimizer', True)


def _move(strategy: dict, key: str, value, source: str) -> None:
    if strategy.get(key) not in (None, value):
        raise ValueError(f'{source}={value} contradicts strategy.{key}={strategy[key]}; set one of them')
    strategy[key] = value


# ------------------------------------------------------------- environment
def set_single_process_rendezvous() -> None:
    """Without a launcher, DeepSpeed still initialises torch.distributed from these variables,
    and without them it tries MPI. A free port lets several single-process runs share a machine."""
    os.environ.setdefault('MASTER_ADDR', '127.0.0.1')
    os.environ.setdefault('MASTER_PORT', str(free_port()))
    os.environ.setdefault('RANK', '0')
    os.environ.setdefault('LOCAL_RANK', '0')
    os.environ.setdefault('WORLD_SIZE', '1')


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def skip_shared_memory_comm_build() -> None:
    """DeepSpeed's torch backend JIT-compiles a shared-memory all-reduce on CPU machines (about a
    minute) at every process-group start in a fresh environment. Only ``inference_all_reduce``
    (tensor-parallel inference) calls it; ZeRO training uses torch.distributed's collectives.
    DeepSpeed builds the op only when its compatibility table says so: that entry is switched off."""
    import deepspeed.ops
    compatible = getattr(deepspeed.ops, '__compatible_ops__', None)
    if isinstance(compatible, dict):
        compatible['deepspeed_shm_comm'] = False


def lora_keys(node, path: str = 'model') -> List[str]:
    """Where a model config turns LoRA on (``lora=dict(...)`` in a backbone, an adapter's ``vit``)."""
    found = []
    if isinstance(node, dict):
        if node.get('lora'):
            found.append(f'{path}.lora')
        for key, value in node.items():
            found += lora_keys(value, f'{path}.{key}')
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            found += lora_keys(value, f'{path}[{i}]')
    return found


def lora_backbones(node) -> List[dict]:
    """The backbone configs (dicts) of a model config that have ``lora``."""
    found = []
    if isinstance(node, dict):
        if node.get('lora'):
            found.append(node)
        for value in node.values():
            found += lora_backbones(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            found += lora_backbones(value)
    return found


def lora_checkpoints(cfg: Config) -> None:
    """A LoRA run whose base weights come from a pretrained file saves its adapters only (models/backbones/lora.py);
    DeepSpeed's ZeRO-2 would add every frozen parameter to its checkpoint as 'frozen fragments' (11 GB for the 6B)."""
    backbones = lora_backbones(cfg.get('model'))
    if backbones and all((b.get('init_cfg') or {}).get('type') == 'Pretrained' for b in backbones):
        cfg.strategy.setdefault('exclude_frozen_parameters', True)


def refuse_zero3_lora(cfg: Config) -> None:
    stage = int((cfg.strategy.get('zero_optimization') or {}).get('stage', 0))
    lora = lora_keys(cfg.get('model'))
    if stage == 3 and lora:
        # ZeRO-3 partitions the frozen base weights to empty placeholders, which peft's LoRA layers read directly
        # (their dtype/device when adapters are built, the weight when merging): peft documents ZeRO-3 + LoRA as
        # needing its own zero3_init path (open upstream issues); the adapters' optimizer state is small anyway.
        raise ValueError(f'DeepSpeed ZeRO-3 is not supported with LoRA ({lora[0]}): use ZeRO-1 or ZeRO-2 '
                         '(--deepspeed 2), which hold the frozen bf16 base whole and partition the adapters\' '
                         'gradients and optimizer state')


def prepare_deepspeed(cfg: Config) -> None:
    """Makes a config with a DeepSpeed strategy ready for ``FlexibleRunner.from_cfg``."""
    import torch

    from .device_env import deepspeed_unavailable
    reason = deepspeed_unavailable()
    if reason:  # mmengine would otherwise say only that DeepSpeed is not installed
        raise ValueError(reason)

    refuse_zero3_lora(cfg)
    lora_checkpoints(cfg)
    to_deepspeed_optim_wrapper(cfg)
    complete_half_precision(cfg.strategy)
    if precision_of(cfg.strategy) == 'fp16':
        unsafe = fp16_safe_segmentation_losses(cfg)
        if unsafe:
            from mmengine.logging import print_log
            print_log(f'fp16: {", ".join(unsafe)} may sum past the fp16 range (65504) and train on inf losses; '
                      'bf16 has no such limit', logger='current', level=logging.WARNING)
    if cfg.get('launcher', 'none') == 'none':
        set_single_process_rendezvous()
    if not torch.cuda.is_available():
        from deepspeed.accelerator import get_accelerator
        backend = get_accelerator().communication_backend_name()
        dist_cfg = cfg.setdefault('env_cfg', ConfigDict()).setdefault('dist_cfg', ConfigDict())
        if dist_cfg.get('backend', 'nccl') == 'nccl':
            dist_cfg['backend'] = backend  # nccl needs CUDA
        skip_shared_memory_comm_build()
    if cfg.get('load_from') and not cfg.get('resume') and not osp.isdir(cfg.load_from):
        # DeepSpeedStrategy.load_checkpoint reads DeepSpeed folders only
        raise ValueError(f'load_from={cfg.load_from} is a single file, but under DeepSpeed load_from must be a '
                         'DeepSpeed checkpoint folder (work_dir/iter_N.pth/). To start from plain weights, '
                         "use model.init_cfg=dict(type='Pretrained', checkpoint=...)")


# -------------------------------------------------------------- checkpoints
def is_deepspeed_checkpoint(path: str) -> bool:
    return osp.isdir(path) and any(glob.glob(osp.join(path, pattern)) for pattern in _MODEL_STATES)


def check_zero_checkpoint(path: str, world_size: Optional[int] = None) -> None:
    """Raises unless ``path`` is a whole ZeRO checkpoint, written by ``world_size`` processes if given.

    DeepSpeed itself, missing the optimizer shards, loads the weights alone and goes on with a
    fresh optimizer: a resume that is not one, and says nothing.
    """
    if osp.isfile(path):
        raise ValueError(f'{path} is a single-file checkpoint; a DeepSpeed run resumes from a DeepSpeed '
                         'checkpoint folder (work_dir/iter_N.pth/)')
    if not osp.isdir(path):
        raise ValueError(f'checkpoint {path} does not exist')
    if not is_deepspeed_checkpoint(path):
        raise ValueError(f'{path} holds no DeepSpeed model states (*model_states.pt): not a DeepSpeed checkpoint, '
                         'or an incomplete one')
    shards = glob.glob(osp.join(path, _OPTIM_STATES))
    if not shards:
        # ZeRO keeps the fp32 master weights there too, so neither resuming nor consolidating can do without
        raise ValueError(f'{path} holds no optimizer states (*_optim_states.pt): an incomplete DeepSpeed checkpoint')
    if world_size is not None and len(shards) != world_size:
        raise ValueError(f'{path} was written by {len(shards)} processes and this run has {world_size}: '
                         'ZeRO partitions the optimizer state per process, so resume with the same number')
