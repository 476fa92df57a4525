"""Model states per GPU (weights, gradients, optimizer state, communication buffers) as the config's
runner holds them: mmengine's Runner with DistributedDataParallel, or DeepSpeed ZeRO through
mmengine's FlexibleRunner (:mod:`internvit_dense.engine.deepspeed`).

The parameters are the model's as built (their dtypes, requires_grad, the frozen ones), the
trainable set is the one the config's optimizer constructor puts in its param groups, and the
optimizer's state per element is what one ``optimizer.step()`` on fake tensors creates. Only the
partitioning is arithmetic: DeepSpeed's layout, the one its own estimators
(``estimate_zero2/3_model_states_mem_needs``) describe.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch
import torch.nn as nn

HALF = {'fp32': 4, 'bf16': 2, 'fp16': 2}
DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}


@dataclass
class Runner:
    """How the config trains: plain DDP (``zero_stage=0``) or DeepSpeed ZeRO 1-3."""
    gpus: int = 1
    zero_stage: int = 0
    precision: str = 'fp32'  # DeepSpeed's; plain runs keep the model's dtypes
    autocast: Optional[torch.dtype] = None  # AmpOptimWrapper
    offload_optimizer: bool = False
    offload_params: bool = False
    reduce_bucket_size: int = int(5e8)
    allgather_bucket_size: int = int(5e8)
    gradient_as_bucket_view: bool = False

    @property
    def compute_dtype(self) -> Optional[torch.dtype]:
        """The dtype DeepSpeed casts the whole model to (None: as built)."""
        return DTYPES[self.precision] if self.zero_stage and self.precision != 'fp32' else None

    def describe(self) -> str:
        if not self.zero_stage:
            amp = f', autocast {str(self.autocast).replace("torch.", "")}' if self.autocast else ''
            return f'DDP (mmengine Runner){amp}, {self.gpus} GPU(s)'
        off = ', optimizer offloaded to CPU' if self.offload_optimizer else ''
        off += ', parameters offloaded to CPU' if self.offload_params else ''
        return f'DeepSpeed ZeRO-{self.zero_stage} {self.precision}{off}, {self.gpus} GPU(s)'


def runner_of(cfg, gpus: int) -> Runner:
    from internvit_dense.engine.deepspeed import precision_of, uses_deepspeed
    if uses_deepspeed(cfg):
        zero = cfg.strategy.get('zero_optimization') or {}
        off_opt = (zero.get('offload_optimizer') or {}).get('device', 'none') in ('cpu', 'nvme')
        off_par = (zero.get('offload_param') or {}).get('device', 'none') in ('cpu', 'nvme')
        return Runner(gpus=gpus, zero_stage=int(zero.get('stage', 0)), precision=precision_of(cfg.strategy),
                      offload_optimizer=off_opt, offload_params=off_par,
                      reduce_bucket_size=int(zero.get('reduce_bucket_size', 5e8)),
                      allgather_bucket_size=int(zero.get('allgather_bucket_size', 5e8)))
    wrapper = cfg.get('optim_wrapper') or {}
    autocast = None
    if wrapper.get('type') == 'AmpOptimWrapper':
        # no dtype: tools/train.py makes it bf16 on a GPU that has bf16 (engine/training.py, use_amp)
        autocast = {'bfloat16': torch.bfloat16, 'float16': torch.float16, None: torch.bfloat16}.get(
            wrapper.get('dtype'), torch.float16)
    bucket_view = bool((cfg.get('model_wrapper_cfg') or {}).get('gradient_as_bucket_view', False))
    return Runner(gpus=gpus, autocast=autocast, gradient_as_bucket_view=bucket_view)


@dataclass
class ParameterCensus:
    """The parameters as built and as the optimizer sees them."""
    trainable: int  # elements in the optimizer's param groups that require gradients
    frozen: int  # every other parameter element
    trainable_bytes: int
    frozen_bytes: int
    buffer_bytes: int
    largest_layer: int  # elements of the module with the most direct parameters (ZeRO-3 gathers it whole)
    optimizer_state_per_element: float  # bytes of optimizer state per trainable element (fp32 params)
    optimizer_type: str
    by_dtype: Dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.trainable + self.frozen


def census(model: nn.Module, optimizer: torch.optim.Optimizer) -> ParameterCensus:
    """Counts the parameters and measures the optimizer's state with one step on fake gradients.

    ``model`` and ``optimizer`` are on fake tensors (or small): the step allocates nothing real.
    """
    # mmengine's default constructor also puts frozen parameters in the groups: they never get a gradient
    in_groups = {id(p) for g in optimizer.param_groups for p in g['params'] if p.requires_grad}
    trainable = [p for p in model.parameters() if id(p) in in_groups]
    frozen = [p for p in model.parameters() if id(p) not in in_groups]
    by_dtype: Dict[str, int] = {}
    for p in model.parameters():
        key = str(p.dtype).replace('torch.', '')
        by_dtype[key] = by_dtype.get(key, 0) + p.numel()
    for p in trainable:
        p.grad = torch.zeros_like(p)
    optimizer.step()
    state_bytes, seen = 0, set()
    for state in optimizer.state.values():
        for v in state.values():
            if torch.is_tensor(v) and v.untyped_storage()._cdata not in seen:
                seen.add(v.untyped_storage()._cdata)
                state_bytes += v.untyped_storage().nbytes()
    trainable_bytes = sum(p.numel() * p.element_size() for p in trainable)
    for p in trainable:
        p.grad = None
    optimizer.state.clear()
    n_trainable = sum(p.numel() for p in trainable)
    # per element of an fp32 parameter (DeepSpeed's master weights are fp32)
    per_element = state_bytes / max(trainable_bytes, 1) * 4 if n_trainable else 0.0
    largest = max((sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules()), default=0)
    return ParameterCensus(trainable=n_trainable, frozen=sum(p.numel() for p in frozen),
                           trainable_bytes=trainable_bytes,
                           frozen_bytes=sum(p.numel() * p.element_size() for p in frozen),
                           buffer_bytes=sum(b.numel() * b.element_size() for b in model.buffers()),
                           largest_layer=largest, optimizer_state_per_element=per_element,
                           optimizer_type=type(optimizer).__name__, by_dtype=by_dtype)


@dataclass
class ModelStates:
    weights: int
    gradients: int
    optimizer: int
    buffers: int
    communication: int  # DDP gradient buckets, DeepSpeed reduce/all-gather buckets, ZeRO-3's gathered layer
    host_optimizer: int = 0  # per process, in CPU memory (offload)
    notes: List[str] = field(default_factory=list)

    zero3_gathered: bool = False

    @property
    def model_states(self) -> int:
        """What DeepSpeed's estimators count: weights, gradients, optimizer (and ZeRO-3's gathered layer)."""
        return self.weights + self.gradients + self.optimizer + (self.communication if self.zero3_gathered else 0)

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.buffers + self.communication


def model_states(c: ParameterCensus, runner: Runner) -> ModelStates:
    n = runner.gpus
    notes = []
    if not runner.zero_stage:
        # DDP: every GPU holds everything; the reducer's buckets copy the gradients unless they are views
        buckets = c.trainable_bytes if n > 1 and not runner.gradient_as_bucket_view else 0
        if buckets:
            notes.append('DDP gradient buckets copy the gradients (model_wrapper_cfg.gradient_as_bucket_view=True '
                         'would share them)')
        optimizer = int(c.optimizer_state_per_element / 4 * c.trainable_bytes)
        return ModelStates(weights=c.trainable_bytes + c.frozen_bytes, gradients=c.trainable_bytes,
                           optimizer=optimizer, buffers=c.buffer_bytes, communication=buckets, notes=notes)

    half = HALF[runner.precision]
    psi, frozen = c.trainable, c.frozen
    buffers = c.buffer_bytes * half // 4 if runner.precision != 'fp32' else c.buffer_bytes
    # per trainable element, 1/n each: fp32 master weights + the optimizer's own state, and the fp32 gradients
    optimizer = (4 + c.optimizer_state_per_element) * psi / n
    fp32_grads = 4 * psi / n
    if runner.zero_stage in (1, 2):
        # the whole module in DeepSpeed's precision; ZeRO-1 keeps whole 16-bit gradients until the step,
        # ZeRO-2 reduces them into each process's partition as backward goes
        weights = (psi + frozen) * half
        grads16 = psi * half if runner.zero_stage == 1 else psi * half / n
        comm = (runner.reduce_bucket_size + runner.allgather_bucket_size) * half
        notes.append('communication: one reduce and one all-gather bucket (reduce/allgather_bucket_size)')
        if runner.offload_optimizer:
            # ZeRO-Offload: gradients go to the CPU partition as they are reduced
            return ModelStates(weights=int(weights), gradients=0, optimizer=0, buffers=buffers, communication=comm,
                               host_optimizer=int(optimizer + fp32_grads), notes=notes)
        return ModelStates(weights=int(weights), gradients=int(grads16 + fp32_grads), optimizer=int(optimizer),
                           buffers=buffers, communication=comm, notes=notes)
    # stage 3: parameters partitioned too; the layer being computed is gathered whole (weights + gradients)
    gathered = 2 * half * c.largest_layer
    notes.append('communication: the largest layer gathered whole (weights and gradients)')
    weights = 0 if runner.offload_params else int((psi + frozen) * half / n)
    if runner.offload_optimizer:
        return ModelStates(weights=weights, gradients=0, optimizer=0, buffers=buffers, communication=gathered,
                           host_optimizer=int(optimizer + fp32_grads), notes=notes, zero3_gathered=True)
    return ModelStates(weights=weights, gradients=int(fp32_grads), optimizer=int(optimizer), buffers=buffers,
                       communication=gathered, notes=notes, zero3_gathered=True)


def deepspeed_estimate(model: nn.Module, runner: Runner) -> Optional[int]:
    """DeepSpeed's own per-GPU estimate of the model states for this runner (None for plain DDP and for
    ZeRO-1, which keeps whole 16-bit gradients where the ZeRO-2 estimate partitions them),
    from ``estimate_zero2/3_model_states_mem_needs_all_live`` (which count every parameter as trained
    and assume 16-bit weights). Their printout is swallowed; the number is returned."""
    if runner.zero_stage not in (2, 3):
        return None
    import contextlib
    import io

    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    # the _all_live functions count parameters by data_ptr(), which fake/meta tensors do not have (all
    # would count as one), then print a table; these are the functions they call, with their counts
    total = sum(p.numel() for p in model.parameters())
    with contextlib.redirect_stdout(io.StringIO()):
        if runner.zero_stage in (1, 2):
            _, gpu = estimate_zero2_model_states_mem_needs(total, num_gpus_per_node=runner.gpus, num_nodes=1,
                                                           cpu_offload=runner.offload_optimizer)
        else:
            largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
            _, gpu, _ = estimate_zero3_model_states_mem_needs(
                total, largest, num_gpus_per_node=runner.gpus, num_nodes=1, cpu_offload=runner.offload_optimizer,
                cpu_offload_params=runner.offload_params, zero_init=True)
    return int(gpu)
