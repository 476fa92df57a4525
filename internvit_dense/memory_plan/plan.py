"""The memory plan of a training config: per GPU, what its runner holds and what one step needs,
against the GPU's memory, and the cheapest changes that make it fit.

Model states come from :mod:`.states` (the parameters as built, the optimizer as the config's
constructor builds it, DeepSpeed's partitioning); activations and the step's peak from
:mod:`.trace` (the real-size model run on fake tensors).
"""
from __future__ import annotations

import copy
import inspect
import math
import time
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import torch

from .states import ModelStates, ParameterCensus, Runner, census, deepspeed_estimate, model_states, runner_of
from .trace import StepMemory, fake_tensors, measure_step

GiB = 2 ** 30
# CUDA context, NCCL buffers and allocator fragmentation are not planned: this share of the GPU is kept free
HEADROOM = 0.05


# ---------------------------------------------------------------- inputs
def _walk_pipeline(transforms, shape: Tuple[int, int]) -> Tuple[int, int]:
    """The largest (h, w) an image can have after ``transforms`` (landscape, the longer side as width)."""
    for t in transforms:
        kind = t.get('type', '')
        kind = kind if isinstance(kind, str) else getattr(kind, '__name__', '')
        if kind == 'RandomChoice':
            branches = [_walk_pipeline(b, shape) for b in t['transforms']]
            shape = max(branches, key=lambda s: s[0] * s[1])
        elif kind in ('Resize', 'RandomResize', 'RandomChoiceResize'):
            scales = t.get('scales') or [t.get('scale')]
            ratio = max(t.get('ratio_range') or (1.0,))
            sizes = [(max(s) * ratio, min(s) * ratio) if isinstance(s, (tuple, list)) else (s * ratio, s * ratio)
                     for s in scales if s is not None]
            if sizes:
                long_side, short_side = max(sizes, key=lambda s: s[0] * s[1])
                shape = (int(short_side), int(long_side))
        elif kind in ('RandomCrop', 'CenterCrop', 'RandomResizedCrop'):
            size = t.get('crop_size') or t.get('scale') or t.get('size')
            h, w = (size, size) if isinstance(size, int) else tuple(size)
            shape = (h, w) if kind != 'RandomCrop' else (min(h, shape[0]), min(w, shape[1]))
    return shape


def training_input_size(cfg) -> Tuple[int, int]:
    """(h, w) of the largest training batch: the data preprocessor's fixed size, or what the training
    pipeline can produce, padded as the data preprocessor pads."""
    pre = cfg.model.get('data_preprocessor') or {}
    if pre.get('size'):
        return tuple(pre['size'])
    dataset = cfg.train_dataloader.dataset
    while 'pipeline' not in dataset and 'dataset' in dataset:  # wrappers (RepeatDataset, ...)
        dataset = dataset.dataset
    h, w = _walk_pipeline(dataset.get('pipeline', []), (224, 224))
    divisor = pre.get('pad_size_divisor') or 1
    return math.ceil(h / divisor) * divisor, math.ceil(w / divisor) * divisor


def _task(model) -> str:
    if hasattr(model, 'rpn_head') and hasattr(model, 'roi_head'):
        return 'detection'
    if hasattr(model, 'decode_head'):
        if hasattr(model.decode_head, 'num_queries'):  # mmseg's Mask2FormerHead: learns from instances of the label map
            return 'mask2former'
        # depth heads (models/depth) carry a depth range; they learn from gt_depth_map, not gt_sem_seg
        return 'depth' if hasattr(model.decode_head, 'max_depth') else 'segmentation'
    return 'classification'


def mask2former_instances(model) -> int:
    """Ground-truth instances per image the plan gives a Mask2Former head: every class of the data set in every
    image, the most mmseg's label-to-instance conversion (one instance per class present) can make."""
    return model.decode_head.num_classes


def _label_map_with_every_class(classes: int, h: int, w: int) -> torch.Tensor:
    """A real (1, h, w) label map in which each of ``classes`` classes holds a band: its values are known, so
    mmseg's ``torch.unique`` and what follows run on them on fake tensors too (``trace.ValueFreeOps``)."""
    from torch.utils._python_dispatch import _disable_current_modes
    if classes > h * w:
        raise ValueError(f'memory plan: {classes} classes do not fit a {h} x {w} label map')
    with _disable_current_modes():  # real, not fake: built inside the plan's fake-tensor mode
        return (torch.arange(h * w) * classes // (h * w)).view(1, h, w)


def _step_function(model, batch: int, size: Tuple[int, int], dtype: torch.dtype, cfg):
    """The forward of a training step as the runner calls it, on fake inputs; returns the loss."""
    h, w = size
    task = _task(model)
    # Mask2Former: the worst case of the matcher and point sampling is every class present (see mask2former_instances)
    labels = _label_map_with_every_class(mask2former_instances(model), h, w) if task == 'mask2former' else None

    def run():
        # zeros, not empty: a real step (memory_plan/validate.py) must be finite, a NaN stops scipy's matcher
        inputs = torch.zeros(batch, 3, h, w, dtype=dtype)
        if task in ('segmentation', 'depth', 'mask2former'):
            from mmengine.structures import PixelData
            from mmseg.structures import SegDataSample
            samples = []
            for _ in range(batch):
                gt = (dict(gt_depth_map=PixelData(data=torch.ones(1, h, w, dtype=dtype))) if task == 'depth' else
                      dict(gt_sem_seg=PixelData(data=labels)) if task == 'mask2former' else
                      dict(gt_sem_seg=PixelData(data=torch.zeros(1, h, w, dtype=torch.long))))
                s = SegDataSample(**gt)
                s.set_metainfo(dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w)))
                samples.append(s)
            losses = model(inputs, samples, mode='loss')
            return model.parse_losses(losses)[0]
        if task == 'classification':
            from mmengine.structures import BaseDataElement
            samples = [BaseDataElement(gt_label=torch.zeros(1, dtype=torch.long)) for _ in range(batch)]
            return model.parse_losses(model(inputs, samples, mode='loss'))[0]
        return _detector_step(model, inputs, cfg)

    return run


def _detector_step(model, inputs, cfg):
    """Backbone, neck and RPN head of a two-stage detector as in training; the RoI heads on as many
    RoIs as the config's samplers keep (their sampling and RoIAlign depend on values fake tensors lack)."""
    import torch.nn.functional as F
    feats = model.extract_feat(inputs)
    cls_scores, bbox_preds = model.rpn_head(feats)[:2]
    loss = sum(t.float().sum() for t in list(cls_scores) + list(bbox_preds))
    batch = inputs.shape[0]
    rcnn = cfg.model.train_cfg.rcnn
    stages = rcnn if isinstance(rcnn, (list, tuple)) else [rcnn]
    roi_head = model.roi_head
    bbox_heads = roi_head.bbox_head if isinstance(roi_head.bbox_head, torch.nn.ModuleList) else [roi_head.bbox_head]
    mask_heads = []
    if getattr(roi_head, 'mask_head', None) is not None:
        mask_heads = roi_head.mask_head if isinstance(roi_head.mask_head, torch.nn.ModuleList) else [roi_head.mask_head]
    extractor = roi_head.bbox_roi_extractor
    extractor = extractor[0] if isinstance(extractor, torch.nn.ModuleList) else extractor
    out = extractor.roi_layers[0].output_size
    out = out if isinstance(out, int) else out[0]
    for i, head in enumerate(bbox_heads):
        sampler = stages[min(i, len(stages) - 1)].sampler
        rois = feats[0].new_empty(batch * sampler.num, extractor.out_channels, out, out).requires_grad_()
        cls_score, bbox_pred = head(rois)
        loss = loss + cls_score.float().logsumexp(-1).sum() + bbox_pred.float().abs().sum()
    for i, head in enumerate(mask_heads):
        sampler = stages[min(i, len(stages) - 1)].sampler
        pos = int(batch * sampler.num * sampler.pos_fraction)
        mask_extractor = roi_head.mask_roi_extractor
        mask_extractor = mask_extractor[0] if isinstance(mask_extractor, torch.nn.ModuleList) else mask_extractor
        size = mask_extractor.roi_layers[0].output_size
        size = size if isinstance(size, int) else size[0]
        rois = feats[0].new_empty(pos, mask_extractor.out_channels, size, size).requires_grad_()
        logits = head(rois)[:, 0]  # mmdet's mask loss takes each RoI's own class channel
        loss = loss + F.binary_cross_entropy_with_logits(logits.float(), torch.zeros_like(logits, dtype=torch.float))
    return loss


# ------------------------------------------------------------------ plan
@dataclass
class Plan:
    config: str
    runner: Runner
    batch_size: int
    input_size: Tuple[int, int]
    gpu_memory: float  # bytes
    census: ParameterCensus
    states: ModelStates
    step: StepMemory
    deepspeed_estimate: Optional[int] = None
    seconds: float = 0.0
    suggestions: List[dict] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.states.total + self.step.kept_for_backward + self.step.transient

    @property
    def usable(self) -> float:
        return self.gpu_memory * (1 - HEADROOM)

    @property
    def fits(self) -> bool:
        return self.total <= self.usable

    def rows(self) -> List[Tuple[str, int]]:
        s = self.states
        return [('weights', s.weights), ('gradients', s.gradients), ('optimizer state', s.optimizer),
                ('buffers', s.buffers), ('communication buffers', s.communication),
                ('activations kept for backward', self.step.kept_for_backward),
                ('largest transient', self.step.transient)]

    def to_dict(self) -> dict:
        return dict(config=self.config, runner=self.runner.describe(), gpus=self.runner.gpus,
                    batch_size=self.batch_size, input_size=list(self.input_size),
                    bytes={name: v for name, v in self.rows()}, total=self.total, gpu_memory=self.gpu_memory,
                    usable=self.usable, fits=self.fits, host_optimizer_bytes=self.states.host_optimizer,
                    autograd_saved=self.step.autograd_saved, step_peak=self.step.peak,
                    model_states=self.states.model_states, deepspeed_estimate=self.deepspeed_estimate,
                    trainable_params=self.census.trainable, frozen_params=self.census.frozen,
                    params_by_dtype=self.census.by_dtype, optimizer=self.census.optimizer_type,
                    seconds=round(self.seconds, 2), suggestions=self.suggestions, notes=self.notes)

    def format(self) -> str:
        gb = lambda b: f'{b / GiB:8.2f} GB'  # noqa: E731
        lines = [f'memory plan of {self.config}',
                 f'  {self.runner.describe()}; batch {self.batch_size} x {self.input_size[0]}x{self.input_size[1]} '
                 f'per GPU; {self.census.trainable:,} trained + {self.census.frozen:,} frozen parameters '
                 f'({self.census.optimizer_type})',
                 '  per GPU:']
        for name, value in self.rows():
            lines.append(f'    {name:31s}{gb(value)}')
        lines.append(f'    {"total":31s}{gb(self.total)}   of {self.gpu_memory / GiB:.0f} GB '
                     f'({self.usable / GiB:.1f} GB usable, {HEADROOM:.0%} kept for CUDA context and fragmentation)')
        if self.states.host_optimizer:
            lines.append(f'    (host memory per process for the offloaded optimizer: {gb(self.states.host_optimizer)})')
        if self.deepspeed_estimate is not None:
            lines.append(f'    model states {gb(self.states.model_states).strip()}; DeepSpeed\'s estimator '
                         f'(estimate_zero{3 if self.runner.zero_stage == 3 else 2}_model_states_mem_needs) '
                         f'{gb(self.deepspeed_estimate).strip()}')
        lines.append(f'  {"fits" if self.fits else "does not fit"}')
        if self.suggestions:
            lines.append('  changes that make it fit, cheapest first:' if not self.fits else '  other options:')
            for s in self.suggestions:
                mark = 'fits' if s['fits'] else 'does not fit'
                lines.append(f'    {s["change"]}: {s["total"] / GiB:.2f} GB, {mark}   [{s["how"]}]')
        for note in self.notes + self.states.notes:
            lines.append(f'  note: {note}')
        lines.append(f'  (planned in {self.seconds:.1f} s)')
        return '\n'.join(lines)

    def one_line(self) -> str:
        fitting = [s for s in self.suggestions if s['fits']]
        advice = (f'; instead: {fitting[0]["change"]} ({fitting[0]["total"] / GiB:.1f} GB): {fitting[0]["how"]}'
                  if fitting else '; no single change found that fits')
        return (f'{self.config} needs {self.total / GiB:.1f} GB per GPU ({self.runner.describe()}, batch '
                f'{self.batch_size}), more than the {self.usable / GiB:.1f} GB usable of {self.gpu_memory / GiB:.0f} GB'
                f'{advice} (memory plan: tools/memory_plan.py)')


def build_model(cfg):
    from mmengine.registry import MODELS, init_default_scope

    import internvit_dense.engine  # noqa: F401  (the optimizer constructor)
    import internvit_dense.models  # noqa: F401
    if cfg.get('default_scope'):
        init_default_scope(cfg.default_scope)
    return MODELS.build(copy.deepcopy(cfg.model))


def build_optimizer(model, cfg):
    from mmengine.optim import build_optim_wrapper
    wrapper = {k: v for k, v in copy.deepcopy(cfg.optim_wrapper).items()
               if k in ('optimizer', 'constructor', 'paramwise_cfg')}
    wrapper['type'] = 'OptimWrapper'  # the optimizer and its groups are the same under Amp/DeepSpeed wrappers
    return build_optim_wrapper(model, wrapper).optimizer


def cast_floating(model, dtype: torch.dtype) -> None:
    """``model.to(dtype)`` for fake tensors (whose ``Module._apply`` cannot swap parameters in place)."""
    for module in model.modules():
        for name, p in module._parameters.items():
            if p is not None and p.is_floating_point():
                module._parameters[name] = torch.nn.Parameter(p.detach().to(dtype), requires_grad=p.requires_grad)
        for name, b in module._buffers.items():
            if b is not None and b.is_floating_point():
                module._buffers[name] = b.to(dtype)


def skip_running_statistics(model) -> None:
    """BatchNorm's running-statistics update divides by n - 1, which fake tensors' batch-norm decomposition
    evaluates: n = 1 (one image, a pooled map) raises, although SyncBN over the GPUs of a real run has more
    values. The update is in place on the (already counted) buffers, so the step's memory is the same without it."""
    from torch.nn.modules.batchnorm import _BatchNorm
    for m in model.modules():
        if isinstance(m, _BatchNorm) and m.training:
            m.track_running_stats = False
            m.running_mean = m.running_var = None


class _Tracer:
    """Plans one config in its variants, on fake tensors, reusing the built model between them."""

    def __init__(self, cfg, target: str):
        self.cfg, self.target = cfg, target
        self._steps = {}

    def model_and_census(self, cfg):
        with fake_tensors(self.target) as values:
            model = build_model(cfg)
            optimizer = build_optimizer(model, cfg)
            values.allow_value_reads += 1  # the optimizer reads its step count; the state's size does not depend on it
            c = census(model, optimizer)
        return model, c

    def step(self, cfg, runner: Runner, batch: int, size) -> StepMemory:
        key = (repr(cfg.model), runner.compute_dtype, runner.autocast, batch, tuple(size))
        if key not in self._steps:
            with fake_tensors(self.target):
                model = build_model(cfg)
                if runner.compute_dtype is not None:  # DeepSpeed casts the whole module, buffers included
                    cast_floating(model, runner.compute_dtype)
                model.train()
                skip_running_statistics(model)
                dtype = runner.compute_dtype or torch.float32
                self._steps[key] = measure_step(model, _step_function(model, batch, size, dtype, cfg),
                                                autocast_dtype=runner.autocast, device_type='cpu')
        return self._steps[key]


def check_plan_arguments(gpus, gpu_memory_gb, batch_size=None) -> None:
    """Every number the plan divides or multiplies by must be a positive one: ``gpus=0`` divided the model
    states by zero under ZeRO, ``batch_size=0`` fell back to the config's batch without a word."""
    problems = []
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 1:
        problems.append(f'--gpus must be a whole number of at least 1 (the processes of the run), got {gpus!r}')
    if isinstance(gpu_memory_gb, bool) or not isinstance(gpu_memory_gb, (int, float)) \
            or not math.isfinite(gpu_memory_gb) or gpu_memory_gb <= 0:
        problems.append(f'--gpu-memory must be a positive number of GB (one GPU\'s memory), got {gpu_memory_gb!r}')
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        problems.append(f'--batch-size must be a whole number of at least 1 (images per GPU), got {batch_size!r}; '
                        "leave it out for the config's train_dataloader.batch_size")
    if problems:
        raise ValueError('; '.join(problems))


def plan_config(cfg, gpus: int = 8, gpu_memory_gb: float = 80, batch_size: Optional[int] = None,
                target: str = 'cuda', suggest: bool = True, name: str = '', _tracer: Optional[_Tracer] = None) -> Plan:
    """The plan of ``cfg`` (an mmengine Config, DeepSpeed options already applied) on ``gpus`` GPUs of
    ``gpu_memory_gb`` GB (GiB, as nvidia-smi counts them). Raises ValueError on a count or size that
    plans nothing (0 GPUs, a negative memory, batch 0), naming the argument."""
    check_plan_arguments(gpus, gpu_memory_gb, batch_size)
    start = time.perf_counter()
    tracer = _tracer or _Tracer(cfg, target)
    runner = runner_of(cfg, gpus)
    batch = batch_size or cfg.train_dataloader.batch_size
    size = training_input_size(cfg)
    model, c = tracer.model_and_census(cfg)
    states = model_states(c, runner)
    step = tracer.step(cfg, runner, batch, size)
    plan = Plan(config=name or cfg.filename, runner=runner, batch_size=batch, input_size=size,
                gpu_memory=gpu_memory_gb * GiB, census=c, states=states, step=step,
                deepspeed_estimate=deepspeed_estimate(model, runner))
    if _task(model) == 'mask2former':
        head = model.decode_head
        k = mask2former_instances(model)
        plan.notes.append(f'Mask2Former planned with {k} ground-truth masks per image (every class present, the most '
                          f'mmseg\'s label-to-instance conversion makes), {min(k, head.num_queries)} of '
                          f'{head.num_queries} queries matched (the Hungarian matcher\'s pairs by shape, not by cost), '
                          f'{head.num_points} points per mask: fewer classes per image need less')
    if target == 'cuda' and _task(model) == 'detection':
        plan.notes.append('RoI heads traced on the sampled RoI count of train_cfg.rcnn.sampler (num, pos_fraction); '
                          'RoI sampling and RoIAlign are not run')
    if suggest and not plan.fits:
        plan.suggestions = suggestions(cfg, plan, tracer)
    plan.seconds = time.perf_counter() - start
    return plan


def stop_if_it_cannot_fit(cfg, config_name: str, gpu_memory_gb: Optional[float] = None,
                          gpus: Optional[int] = None) -> None:
    """``tools/train.py``'s check before the model is built: on CUDA machines, a run whose plan does not fit
    the GPUs stops with the plan's one line (what to run instead). Nothing happens on CPU-only machines
    (host memory is not what the plan sizes), and a plan that fails to run only warns.
    ``gpu_memory_gb`` / ``gpus`` default to this machine's GPU and the run's number of processes as its
    launcher gives it (under Slurm SLURM_NTASKS: WORLD_SIZE is not set yet)."""
    import warnings

    from internvit_dense.engine.cli import launcher_local_rank, launcher_world_size
    launcher = cfg.get('launcher')
    if gpu_memory_gb is None:
        if not torch.cuda.is_available():
            return
        local = launcher_local_rank(launcher) % torch.cuda.device_count()
        gpu_memory_gb = torch.cuda.get_device_properties(local).total_memory / GiB
    gpus = gpus or launcher_world_size(launcher)
    try:
        plan = plan_config(copy.deepcopy(cfg), gpus=gpus, gpu_memory_gb=gpu_memory_gb, name=config_name)
    except Exception as e:  # the plan advises; it must not be what stops a run that may fit
        warnings.warn(f'memory plan of {config_name} failed ({type(e).__name__}: {e}); training without it')
        return
    if not plan.fits:
        raise SystemExit(plan.one_line())


# ------------------------------------------------------------ suggestions
def _backbone_vit_key(cfg) -> Optional[str]:
    backbone = cfg.model.get('backbone') or {}
    if backbone.get('type') == 'InternViTAdapter':
        return 'model.backbone.vit'
    if backbone.get('type') == 'InternViT':
        return 'model.backbone'
    return None


def _vit_cfg(cfg):
    key = _backbone_vit_key(cfg)
    if key is None:
        return None
    node = cfg
    for part in key.split('.'):
        node = node[part]
    return node


def _with(cfg, edit):
    new = copy.deepcopy(cfg)
    edit(new)
    return new


def suggestions(cfg, plan: Plan, tracer: _Tracer) -> List[dict]:
    """Changes of the config, cheapest first, each planned; then, if none alone fits, their combinations
    in that order. Each has its command-line form."""
    from internvit_dense.engine.deepspeed import apply_deepspeed_options, lora_keys, uses_deepspeed
    gpus, gb = plan.runner.gpus, plan.gpu_memory / GiB
    candidates = []  # (label, how, edit(cfg) -> None)
    backbone = cfg.model.get('backbone') or {}
    vit = _vit_cfg(cfg)
    vit_key = _backbone_vit_key(cfg)
    cp_key = 'model.backbone' if backbone.get('type') == 'InternViTAdapter' else vit_key
    if vit is not None and not (backbone.get('with_cp') or vit.get('with_cp')) and \
            (not vit.get('frozen') or backbone.get('type') == 'InternViTAdapter'):
        def cp_on(c):
            node = c.model.backbone
            node.with_cp = True
        candidates.append(('activation checkpointing (with_cp)', f'--cfg-options {cp_key}.with_cp=True', cp_on))
    if vit is not None and vit.get('frozen') and 'dtype' in inspect.signature(_internvit_init()).parameters \
            and vit.get('dtype') in (None, 'float32') and not uses_deepspeed(cfg):
        def bf16(c):
            _vit_cfg(c).dtype = 'bfloat16'
        candidates.append(('frozen backbone in bf16', f'--cfg-options {vit_key}.dtype=bfloat16', bf16))
    stage = plan.runner.zero_stage
    for s in (1, 2, 3):
        if s <= stage or s == 3 and lora_keys(cfg.get('model')):  # LoRA refuses ZeRO-3 (engine/deepspeed.py)
            continue
        def zero(c, s=s):
            base = _deepspeed_base(s)
            precision = None if uses_deepspeed(c) else 'bf16'
            apply_deepspeed_options(c, base, precision)
        how = f'--deepspeed {s}' + ('' if uses_deepspeed(cfg) else ' --deepspeed-precision bf16')
        candidates.append((f'DeepSpeed ZeRO-{s}' + ('' if uses_deepspeed(cfg) else ' bf16'), how, zero))
    if not plan.runner.offload_optimizer and plan.census.trainable:
        def offload(c):
            if uses_deepspeed(c):
                apply_deepspeed_options(c, None, None, offload=True)
            else:
                apply_deepspeed_options(c, _deepspeed_base(2), 'bf16', offload=True)
        how = ('--deepspeed-offload' if uses_deepspeed(cfg)
               else '--deepspeed 2 --deepspeed-precision bf16 --deepspeed-offload')
        candidates.append(('optimizer state offloaded to CPU', how, offload))

    out = []

    def evaluate(label, how, new_cfg, batch=None):
        p = plan_config(new_cfg, gpus, gb, batch or plan.batch_size, tracer.target, suggest=False, name=plan.config,
                        _tracer=tracer)
        out.append(dict(change=label, how=how, total=p.total, fits=p.fits))
        return p

    for label, how, edit in candidates:
        evaluate(label, how, _with(cfg, edit))
    if not any(s['fits'] for s in out) and len(candidates) > 1:
        combined, labels, hows = cfg, [], []
        for label, how, edit in candidates:
            combined = _with(combined, edit)
            labels.append(label)
            hows.append(how)
            if len(labels) > 1:
                p = evaluate(' + '.join(labels), ' '.join(hows), combined)
                if p.fits:
                    break
    # smaller batches, gradient accumulation keeping the effective batch
    batch = plan.batch_size
    counts = (cfg.optim_wrapper or {}).get('accumulative_counts', 1)
    while batch > 1:
        batch //= 2
        factor = plan.batch_size // batch * counts
        evaluate(f'batch {batch} per GPU', f'--cfg-options train_dataloader.batch_size={batch} '
                 f'optim_wrapper.accumulative_counts={factor}', cfg, batch=batch)
        if out[-1]['fits']:
            break
    return out


def _internvit_init():
    from internvit_dense.models.backbones import InternViT
    return InternViT.__init__


def _deepspeed_base(stage: int) -> dict:
    import os.path as osp

    from mmengine.config import Config
    root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    return Config.fromfile(osp.join(root, 'configs', '_base_', 'deepspeed', f'zero{stage}.py')).strategy.to_dict()


def apply_overrides(cfg, deepspeed: Optional[int] = None, precision: Optional[str] = None, offload: bool = False):
    """``tools/train.py``'s DeepSpeed flags, applied as train.py applies them."""
    from internvit_dense.engine.deepspeed import apply_deepspeed_options, refuse_zero3_lora, uses_deepspeed
    base = _deepspeed_base(deepspeed) if deepspeed else None
    apply_deepspeed_options(cfg, base, precision, offload)
    if uses_deepspeed(cfg):
        refuse_zero3_lora(cfg)  # as training would
    return cfg


__all__ = ['Plan', 'plan_config', 'stop_if_it_cannot_fit', 'apply_overrides', 'training_input_size']
