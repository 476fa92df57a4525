"""Activations of one training step, measured without allocating them.

The real-size model is built and run under torch's ``FakeTensorMode``: every tensor has its shape,
dtype and device but no storage, so a 6B model and its step cost neither memory nor FLOPs. While
the step runs, :class:`LiveStorages` follows every tensor's storage from creation to release
(the peak of live tensors) and ``torch.autograd.graph.saved_tensors_hooks`` sees what autograd
saves for backward. Fake CPU tensors rather than the meta device, because autocast (``--amp``)
applies to them.

Fake tensors have no values, so three things need help (:class:`ValueFreeOps`):
- ops whose output shape depends on values (``nonzero``, boolean indexing) get the largest shape
  they can have (every element selected), the worst case a step can reach;
- reading a value (``.item()``, ``bool(t)``) is refused with the op named, except inside mmcv's
  deformable attention, whose only value read is an assertion on its input shapes;
- mmcv's multi-scale deformable attention has no fake kernel: on the GPU its CUDA op runs
  (:func:`ms_deform_attn_cuda_like`, registered below with the CUDA kernel's output shape and
  saved tensors); the CPU path (``target='cpu'``, to compare with a step measured on this machine)
  is mmcv's own PyTorch implementation, given the level shapes it reads from the tensor as numbers.
"""
from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass
from typing import Callable, Dict, Optional
from unittest import mock

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten


# ------------------------------------------------------ mmcv's deformable attention
@torch.library.custom_op('internvit_dense::ms_deform_attn_cuda_like', mutates_args=())
def ms_deform_attn_cuda_like(value: torch.Tensor, sampling_locations: torch.Tensor,
                             attention_weights: torch.Tensor) -> torch.Tensor:
    """Stands for mmcv's ``MultiScaleDeformableAttnFunction`` (CUDA) in memory plans; fake tensors only."""
    raise RuntimeError('ms_deform_attn_cuda_like has no real kernel: it exists for memory planning on fake tensors')


@ms_deform_attn_cuda_like.register_fake
def _(value, sampling_locations, attention_weights):
    # mmcv's CUDA kernel: value (bs, num_value, heads, head_dims) -> (bs, num_query, heads * head_dims)
    bs, _, heads, head_dims = value.shape
    return value.new_empty(bs, sampling_locations.shape[1], heads * head_dims)


def _ms_deform_setup(ctx, inputs, output):
    # what MultiScaleDeformableAttnFunction.forward saves (besides the small shape/index tensors)
    ctx.save_for_backward(*inputs)


def _ms_deform_backward(ctx, grad_output):
    value, locations, weights = ctx.saved_tensors
    return torch.empty_like(value), torch.empty_like(locations), torch.empty_like(weights)


ms_deform_attn_cuda_like.register_autograd(_ms_deform_backward, setup_context=_ms_deform_setup)


# ------------------------------------------------------------- value-free ops
class ValueFreeOps(TorchDispatchMode):
    """Runs above ``FakeTensorMode``: gives value-dependent ops their largest shapes and refuses value reads."""

    def __init__(self):
        super().__init__()
        self.allow_value_reads = 0
        self.constants = TensorConstants()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (aten.nonzero.default,):
            (t,) = args
            return torch.empty((t.numel(), t.dim()), dtype=torch.long, device=t.device)
        if func is aten.masked_select.default:
            t, mask = args
            return t.new_empty(torch.broadcast_shapes(t.shape, mask.shape).numel())
        if func is aten.index.Tensor and any(i is not None and i.dtype in (torch.bool, torch.uint8)
                                             for i in args[1]):
            indices = []
            for i in args[1]:
                if i is not None and i.dtype in (torch.bool, torch.uint8):
                    indices.extend(torch.empty((i.numel(),), dtype=torch.long, device=i.device)
                                   for _ in range(i.dim()))
                else:
                    indices.append(i)
            return func(args[0], indices)
        if func in (aten._local_scalar_dense.default, aten.is_nonzero.default):
            if self.allow_value_reads:
                return True if func is aten.is_nonzero.default else 1
            raise RuntimeError(f'the memory plan runs the model on fake tensors, which hold no values, and {func} '
                               'reads one (.item(), bool(tensor) or a data-dependent branch)')
        return func(*args, **kwargs)


class TensorConstants(TorchFunctionMode):
    """Remembers the numbers of small tensors built from Python data (``torch.tensor([[h, w], ...])``),
    which fake tensors forget."""

    def __init__(self):
        super().__init__()
        self.values: Dict[int, list] = {}  # id(tensor) -> its values
        self._alive = []  # keeps those tensors (and so their ids) alive for the step

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is torch.tensor and isinstance(args[0], (list, tuple)) and out.numel() <= 64:
            self.values[id(out)] = list(args[0])
            self._alive.append(out)
        return out


@contextlib.contextmanager
def mmcv_deformable_attention(values: ValueFreeOps, target: str):
    """mmcv's MultiScaleDeformableAttention on fake tensors: its shape assertion passes, and the
    attention itself is the CUDA op's footprint (``target='cuda'``) or mmcv's PyTorch path (``'cpu'``)."""
    try:
        from mmcv.ops import multi_scale_deform_attn as msda
    except ImportError:  # no mmcv: no model can use it
        yield
        return
    pytorch_path = msda.multi_scale_deformable_attn_pytorch
    forward = msda.MultiScaleDeformableAttention.forward

    def attention(value, spatial_shapes, sampling_locations, attention_weights):
        if target == 'cuda':
            return ms_deform_attn_cuda_like(value, sampling_locations, attention_weights)
        shapes = values.constants.values.get(id(spatial_shapes))
        if shapes is None:
            raise RuntimeError('memory plan: the level shapes of a deformable attention are not known; build them '
                               'with torch.tensor([[h, w], ...]) as the ViT-Adapter does')
        return pytorch_path(value, [tuple(s) for s in shapes], sampling_locations, attention_weights)

    def forward_reading_assertions(self, *args, **kwargs):
        values.allow_value_reads += 1  # mmcv asserts sum(h * w) == num_value on the tensor
        try:
            return forward(self, *args, **kwargs)
        finally:
            values.allow_value_reads -= 1

    with mock.patch.object(msda, 'multi_scale_deformable_attn_pytorch', attention), \
            mock.patch.object(msda.MultiScaleDeformableAttention, 'forward', forward_reading_assertions):
        yield


# ---------------------------------------------------------------- the step
@dataclass
class StepMemory:
    """Bytes of one forward + backward, beyond the parameters and buffers."""
    kept_for_backward: int  # live after the forward (the loss aside): what backward needs
    autograd_saved: int  # what autograd's saved_tensors_hooks saw (not the inputs of checkpointed blocks)
    peak: int  # the most bytes live at once during forward + backward, gradients included
    peak_without_gradients: int  # the most bytes live at once, the parameters' gradients left out

    @property
    def transient(self) -> int:
        """The peak above the activations kept: attention, logits, losses, recomputed blocks."""
        return max(self.peak_without_gradients - self.kept_for_backward, 0)


class LiveStorages(TorchDispatchMode):
    """Follows every storage an op creates until it is released: the bytes live now and at the peak.

    (torch's own MemTracker does this too, but snapshots every module at every op: minutes for a 6B model.)
    """

    def __init__(self, ignore=()):
        super().__init__()
        self.ignore = set(ignore)  # parameters and buffers
        self.live: Dict[int, int] = {}
        self.current = self.peak = 0
        self.gradients = 0  # bytes of parameter gradients accumulated so far
        self.peak_without_gradients = 0
        self._refs = {}

    def _release(self, key, _ref=None):
        self.current -= self.live.pop(key, 0)
        self._refs.pop(key, None)

    def add_gradient(self, grad: torch.Tensor) -> None:
        st = grad.untyped_storage()
        if st._cdata in self.live and st._cdata not in self._grad_keys:
            self._grad_keys.add(st._cdata)
            self.gradients += st.nbytes()

    def __enter__(self):
        self._grad_keys = set()
        return super().__enter__()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else (out,)):
            if not isinstance(t, torch.Tensor):
                continue
            st = t.untyped_storage()
            key = st._cdata
            if key in self.live or key in self.ignore:
                continue
            self.live[key] = st.nbytes()
            self._refs[key] = weakref.ref(st, lambda ref, key=key: self._release(key))
            self.current += st.nbytes()
            self.peak = max(self.peak, self.current)
            self.peak_without_gradients = max(self.peak_without_gradients, self.current - self.gradients)
        return out


def measure_step(model: nn.Module, run_loss: Callable[[], torch.Tensor], autocast_dtype: Optional[torch.dtype] = None,
                 device_type: str = 'cpu') -> StepMemory:
    """Runs ``run_loss()`` (the forward, returning a scalar loss) and its backward, counting memory.

    Works on real and on fake tensors alike (it only follows storages).
    """
    states = {t.untyped_storage()._cdata for t in list(model.parameters()) + list(model.buffers())}
    saved: Dict[int, int] = {}

    def pack(t):
        st = t.untyped_storage()
        if st._cdata not in states:
            saved[st._cdata] = st.nbytes()
        return t

    live = LiveStorages(ignore=states)
    hooks = [p.register_post_accumulate_grad_hook(lambda p: live.add_gradient(p.grad))
             for p in model.parameters() if p.requires_grad]
    amp = (torch.autocast(device_type, dtype=autocast_dtype) if autocast_dtype is not None
           else contextlib.nullcontext())
    try:
        with live:
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                with amp:
                    loss = run_loss()
            after_forward = live.current - loss.untyped_storage().nbytes()
            loss.backward()
            del loss
    finally:
        for h in hooks:
            h.remove()
    for p in model.parameters():
        p.grad = None
    return StepMemory(kept_for_backward=after_forward, autograd_saved=sum(saved.values()), peak=live.peak,
                      peak_without_gradients=live.peak_without_gradients)


@contextlib.contextmanager
def fake_tensors(target: str = 'cuda'):
    """A context in which models and inputs are built and run as fake tensors; yields the ValueFreeOps."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    fake = FakeTensorMode(allow_non_fake_inputs=True)
    values = ValueFreeOps()
    # BatchNorm refuses one value per channel in training (batch 1, pooled maps); SyncBN over the GPUs
    # of a real run has more, and the memory is the same
    no_bn_check = mock.patch.object(torch.nn.functional, '_verify_batch_size', lambda size: None)
    with fake, values, values.constants, mmcv_deformable_attention(values, target), no_bn_check:
        yield values
