"""Layer-wise learning-rate decay for fine-tuning InternViT in a segmentor or detector.

Blocks near the input keep most of what pre-training taught them, so they get
smaller learning rates than blocks near the output, and the freshly initialised
neck and heads get the full rate (BEiT / MAE-style fine-tuning)::

    optim_wrapper = dict(
        type='OptimWrapper',  # or 'AmpOptimWrapper', with its own arguments
        optimizer=dict(type='AdamW', lr=4e-5, betas=(0.9, 0.999), weight_decay=0.05),
        constructor='LayerDecayOptimWrapperConstructor',
        paramwise_cfg=dict(num_layers=48, layer_decay_rate=0.95))

Layer ids come from the backbone (``backbone.get_layer_depth(name)``, mmpretrain's interface): for
InternViT the embeddings are 0 and block ``i`` is ``i + 1``; the ViT-Adapter numbers its ViT the same
way; everything outside the backbone's layers (adapter parts, neck, heads) is ``num_layers + 1``. A
parameter's learning rate is ``lr * layer_decay_rate ** (num_layers + 1 - layer_id)``.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Dict, List, Optional, Tuple

import torch.nn as nn
from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from mmdet.registry import OPTIM_WRAPPER_CONSTRUCTORS as DET_CONSTRUCTORS
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS
from mmseg.registry import OPTIM_WRAPPER_CONSTRUCTORS as SEG_CONSTRUCTORS

PARAMWISE_KEYS = ('num_layers', 'layer_decay_rate', 'no_decay_names')
# Embeddings are looked up, not multiplied: shrinking them towards 0 only erases pre-training.
DEFAULT_NO_DECAY_NAMES = ('cls_token', 'pos_embed')
_WRAPPER_PREFIX = 'module.'
_BACKBONE_PREFIX = 'backbone.'


def strip_wrapper_prefix(name: str) -> str:
    """``module.backbone.x`` (DDP and friends) -> ``backbone.x``."""
    while name.startswith(_WRAPPER_PREFIX):
        name = name[len(_WRAPPER_PREFIX):]
    return name


def get_layer_id(name: str, backbone: nn.Module, num_layers: int) -> int:
    """Layer id of a parameter named relative to the segmentor/detector (``backbone.blocks.3...``)."""
    name = strip_wrapper_prefix(name)
    if not name.startswith(_BACKBONE_PREFIX):
        return num_layers + 1
    layer_id, _ = backbone.get_layer_depth(name, prefix=_BACKBONE_PREFIX)
    return layer_id


def name_matches(name: str, key: str) -> bool:
    """Whether ``key`` is a whole dotted component (or run of components) of ``name``.

    Whole components, so that ``pos_embed`` does not also catch a ``pos_embed_proj`` layer.
    """
    return f'.{key}.' in f'.{name}.'


def check_trainable(model: nn.Module) -> None:
    """Raises if ``model`` has nothing for an optimizer to update."""
    params = list(model.parameters())
    if not any(p.requires_grad for p in params):
        raise ValueError(f'{type(model).__name__} has no trainable parameter (all {len(params)} parameter tensors '
                         'have requires_grad=False), so there is nothing to optimise. A frozen backbone '
                         '(frozen=True) needs a neck or head that is trained.')


def _unwrap(model: nn.Module) -> nn.Module:
    # Model wrappers (MMDistributedDataParallel, DataParallel, ...) hold the real model as `.module`,
    # possibly more than once; the parameter names must be relative to the real model.
    while isinstance(getattr(model, 'module', None), nn.Module):
        model = model.module
    return model


# Configs run in the 'mmseg' or 'mmdet' scope, whose registries are looked up first.
@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
@SEG_CONSTRUCTORS.register_module()
@DET_CONSTRUCTORS.register_module()
class LayerDecayOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """Builds an optim wrapper whose param groups decay the learning rate layer by layer.

    ``paramwise_cfg`` keys:

    - ``layer_decay_rate`` (required): factor between the learning rates of neighbouring layers.
    - ``num_layers``: number of backbone blocks; defaults to ``model.backbone.depth`` and must
      equal it when both are known.
    - ``no_decay_names``: extra parameter names (whole dotted components, e.g. ``level_embed``)
      that get no weight decay, besides 1-D parameters (norms, biases, layer scales),
      ``cls_token`` and ``pos_embed``.

    Parameters with ``requires_grad=False`` (a frozen backbone) are left out of the optimizer.
    Parameters with the same learning rate and weight decay share one param group.
    The optimizer and the optim wrapper (``OptimWrapper``, ``AmpOptimWrapper``, ...) are built
    by :class:`DefaultOptimWrapperConstructor` from the config as usual.
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None):
        super().__init__(optim_wrapper_cfg, paramwise_cfg)
        cfg = self.paramwise_cfg
        unknown = sorted(set(cfg) - set(PARAMWISE_KEYS))
        if unknown:
            # A misspelt key would otherwise silently train without layer decay.
            raise KeyError(f'LayerDecayOptimWrapperConstructor does not know paramwise_cfg keys {unknown}; '
                           f'it accepts {list(PARAMWISE_KEYS)}')
        if 'layer_decay_rate' not in cfg:
            raise KeyError('LayerDecayOptimWrapperConstructor needs paramwise_cfg=dict(layer_decay_rate=...)')
        self.layer_decay_rate = float(cfg['layer_decay_rate'])
        if not self.layer_decay_rate > 0:
            raise ValueError(f'layer_decay_rate must be positive, got {cfg["layer_decay_rate"]}')
        self.num_layers = cfg.get('num_layers')
        if self.num_layers is not None and (not isinstance(self.num_layers, int) or self.num_layers < 1):
            raise ValueError(f'num_layers must be a positive int, got {self.num_layers!r}')
        if self.base_lr is None:
            raise ValueError('layer decay scales the optimizer lr, so optimizer=dict(lr=...) must be set')
        extra = cfg.get('no_decay_names', ())
        self.no_decay_names = DEFAULT_NO_DECAY_NAMES + ((extra,) if isinstance(extra, str) else tuple(extra))

    def __call__(self, model: nn.Module) -> OptimWrapper:
        model = _unwrap(model)
        check_trainable(model)
        return super().__call__(model)

    # ----------------------------------------------------------------- helpers
    def _resolve_num_layers(self, model: nn.Module) -> Optional[int]:
        """Number of backbone blocks, or None when the model has no backbone (no layer decay)."""
        backbone = getattr(model, 'backbone', None)
        if not isinstance(backbone, nn.Module):
            return None
        if not callable(getattr(backbone, 'get_layer_depth', None)):
            raise ValueError(f'{type(backbone).__name__} does not say which layer a parameter is in '
                             '(get_layer_depth(name)), so layer decay cannot be applied to it')
        depth = getattr(backbone, 'depth', None)
        if self.num_layers is None:
            if not isinstance(depth, int):
                raise ValueError(f'{type(backbone).__name__} has no integer `depth`; '
                                 'set paramwise_cfg=dict(num_layers=...)')
            return depth
        if isinstance(depth, int) and depth != self.num_layers:
            # e.g. a '6b-448' backbone (45 blocks) with a config written for '6b' (48).
            raise ValueError(f'paramwise_cfg num_layers={self.num_layers} but the backbone has depth={depth}; '
                             'drop num_layers or make it match')
        return self.num_layers

    def _lr_scale(self, layer_id: int, num_layers: Optional[int]) -> float:
        if num_layers is None:
            return 1.0
        return self.layer_decay_rate ** (num_layers + 1 - layer_id)

    def _weight_decay(self, name: str, param: nn.Parameter) -> Optional[float]:
        if param.ndim <= 1 or any(name_matches(name, key) for key in self.no_decay_names):
            return 0.0
        return self.base_wd  # None: the optimizer's own default applies

    # ------------------------------------------------------------------- hooks
    def add_params(self, params: List[dict], module: nn.Module, prefix: str = '',
                   is_dcn_module=None) -> None:
        """Fills ``params`` with one group per (lr, weight decay) over all of ``module``.

        Replaces the base class's per-module recursion: the layer id depends on the
        full parameter name, and one group per tensor would make hundreds of groups for 6B.
        """
        num_layers = self._resolve_num_layers(module)
        backbone = getattr(module, 'backbone', None)
        if num_layers is None:
            print_log(f'LayerDecayOptimWrapperConstructor: {type(module).__name__} has no `backbone`, '
                      'so layer decay is off and every parameter uses the base lr', logger='current')

        groups: Dict[Tuple[float, Optional[float]], dict] = {}
        table: Dict[int, List[int]] = defaultdict(lambda: [0, 0, 0])  # layer id -> tensors, elements, no-decay
        frozen_tensors = frozen_elements = 0
        for name, param in module.named_parameters(prefix=prefix):
            if not param.requires_grad:
                frozen_tensors += 1
                frozen_elements += param.numel()
                continue
            name = strip_wrapper_prefix(name)
            layer_id = 0 if num_layers is None else get_layer_id(name, backbone, num_layers)
            lr = self.base_lr * self._lr_scale(layer_id, num_layers)
            wd = self._weight_decay(name, param)
            if (lr, wd) not in groups:
                groups[lr, wd] = dict(params=[], lr=lr) if wd is None else dict(params=[], lr=lr, weight_decay=wd)
            groups[lr, wd]['params'].append(param)
            row = table[layer_id]
            row[0] += 1
            row[1] += param.numel()
            row[2] += int(wd == 0.0)

        # mmengine logs param_groups[0]['lr'] as the run's lr: putting the full-lr groups
        # (neck/heads) first makes that the configured lr rather than the embedding's.
        ordered = [groups[key] for key in sorted(groups, key=lambda k: (-k[0], k[1] == 0.0))]
        params.extend(ordered)

        if frozen_tensors:
            print_log(f'LayerDecayOptimWrapperConstructor: {frozen_tensors} parameter tensors '
                      f'({frozen_elements:,} elements) have requires_grad=False and are not optimised',
                      logger='current')
        self._log_summary(table, num_layers, len(ordered))

    def _log_summary(self, table: Dict[int, List[int]], num_layers: Optional[int], num_groups: int) -> None:
        if num_layers is None:
            setting = 'off (no backbone)'
        else:
            setting = f'rate {self.layer_decay_rate} over {num_layers} blocks'
        lines = [f'layer decay {setting}, base lr {self.base_lr}, {num_groups} param groups',
                 f'{"id":>4} {"layer":<11} {"lr scale":>9} {"lr":>10} {"tensors":>8} {"no-decay":>8} {"params":>15}']
        for layer_id in sorted(table):
            tensors, elements, no_decay = table[layer_id]
            scale = self._lr_scale(layer_id, num_layers)
            lines.append(f'{layer_id:>4} {_layer_label(layer_id, num_layers):<11} {scale:>9.4f} '
                         f'{self.base_lr * scale:>10.3e} {tensors:>8} {no_decay:>8} {elements:>15,}')
        print_log('\n'.join(lines), logger='current')


def _layer_label(layer_id: int, num_layers: Optional[int]) -> str:
    if num_layers is None:
        return 'all'
    if layer_id == 0:
        return 'embed'
    return f'block {layer_id - 1}' if layer_id <= num_layers else 'neck/heads'
