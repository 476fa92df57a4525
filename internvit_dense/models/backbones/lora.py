"""Low-rank adapters (LoRA) on a frozen encoder, through Hugging Face ``peft``.

``backbone=dict(..., frozen=False, lora=dict(rank=16, alpha=32, dropout=0.05,
targets=('attn.qkv', 'attn.proj', 'mlp.fc1', 'mlp.fc2'), blocks=None))``: each target linear of the
chosen blocks (all of them when ``blocks`` is None) becomes peft's ``lora.Linear`` around the original
layer. The base weights stay frozen in the config's dtype (bf16 for a 6B: 11 GB, memory-mapped from the
pretrained file as without LoRA); the adapters are fp32 (what ``get_peft_model``'s ``autocast_adapter_dtype`` makes
them since peft 0.12); peft starts the up-projection ``lora_B`` at zero, so an untrained
adapter leaves the model's output exactly the frozen model's. These are InternVL's own targets for its
vision LoRA (``wrap_backbone_lora``: r=128, alpha=256, dropout 0.05 on the same four linears).

peft's ``inject_adapter_in_model``, not ``get_peft_model``: it adapts the module in place, so the
parameter paths keep our names (``blocks.3.attn.qkv.base_layer.weight``, ``blocks.3.attn.qkv.lora_A.default.weight``)
that layer-wise lr decay (``get_layer_depth``) and the checkpoint formats key on, where ``get_peft_model``
prefixes every name with ``base_model.model.`` and wraps the model. Its documented limit, no tuner object to
call ``merge_and_unload`` on, is met by :func:`merge_lora`: each peft layer's own ``merge``, then its base layer
put back.

Checkpoints. A backbone whose base weights come from a pretrained file (``init_cfg=dict(type='Pretrained')``,
``load_pretrained``) saves only its adapters: its state dict holds the ``lora_*`` tensors and ``lora._extra_state``,
which records the settings and the identity of the pretrained file (size and a hash of its first and last MiB,
:func:`internvit_dense.checkpoint.files.checkpoint_identity`). Loading such a checkpoint checks that identity
against the file the base weights came from, in whichever order the two arrive (training resumes after the
pretrained weights are loaded; ``build_trained`` fills the adapters first), and refuses another base naming
both files. A backbone without a pretrained file saves its base weights too: nothing else could restore them.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn

from internvit_dense.checkpoint import CheckpointError
from internvit_dense.checkpoint.files import checkpoint_identity

ADAPTER = 'default'  # peft's adapter name: one adapter per backbone
DEFAULT_TARGETS = ('attn.qkv', 'attn.proj', 'mlp.fc1', 'mlp.fc2')
SETTINGS = ('rank', 'alpha', 'dropout', 'targets', 'blocks')
RECORD = 'lora'  # the backbone's attribute (and state-dict prefix) holding the adapters' record
PEFT_INSTALL = "pip install 'internvit-dense[lora]' (Hugging Face peft)"


def import_peft():
    try:
        import peft  # noqa: F401
    except ImportError as e:
        raise ImportError(f'lora=dict(...) needs Hugging Face peft, which is not installed: {PEFT_INSTALL}') from e
    return peft


def lora_settings(lora: dict, depth: int) -> dict:
    """The config's ``lora=dict(...)`` checked and completed (``alpha`` defaults to ``2 * rank``; ``blocks`` to all)."""
    unknown = sorted(set(lora) - set(SETTINGS))
    if unknown:
        raise ValueError(f'lora: unknown keys {unknown}; it takes {list(SETTINGS)}')
    rank = lora.get('rank', 16)
    if not isinstance(rank, int) or rank < 1:
        raise ValueError(f'lora.rank must be a positive int, got {rank!r}')
    alpha = lora.get('alpha', 2 * rank)
    dropout = float(lora.get('dropout', 0.0))
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f'lora.dropout must be in [0, 1), got {dropout}')
    targets = lora.get('targets', DEFAULT_TARGETS)
    targets = [targets] if isinstance(targets, str) else list(targets)
    if not targets or not all(isinstance(t, str) and t for t in targets):
        raise ValueError(f'lora.targets must name linear layers inside a block, e.g. {list(DEFAULT_TARGETS)}')
    blocks = lora.get('blocks')
    if blocks is not None:
        for b in blocks:
            if not -depth <= b < depth:
                raise IndexError(f'lora.blocks: block {b} is outside the {depth} blocks of this backbone')
        blocks = sorted({b % depth for b in blocks})
    return dict(rank=rank, alpha=alpha, dropout=dropout, targets=targets, blocks=blocks)


def is_adapter_name(name: str) -> bool:
    """A state-dict key (relative to the backbone) of the adapters or their record, not of the base weights."""
    return '.lora_' in f'.{name}' or name.startswith(f'{RECORD}.')


def base_name(name: str) -> str:
    """``blocks.0.attn.qkv.base_layer.weight`` -> ``blocks.0.attn.qkv.weight``: the name a pretrained file uses."""
    return name.replace('.base_layer.', '.')


def _same_weights(a: dict, b: dict) -> bool:
    # size and content hash of each file; the file names may differ (a copy, a renamed download)
    return a.get('kind') == b.get('kind') and [f[1:] for f in a.get('files', [])] == [f[1:] for f in b.get('files', [])]


def _describe(identity: dict) -> str:
    files = identity.get('files') or []
    return ', '.join(f'{name} ({size:,} bytes, sha1 of first/last MiB {digest[:12]})' for name, size, digest in files)


class LoRARecord(nn.Module):
    """What a backbone's adapters are and which pretrained weights they adapt; saved as its ``_extra_state``."""

    def __init__(self, settings: dict, adapters_only: bool):
        super().__init__()
        self.settings = settings
        self.adapters_only = adapters_only  # the base weights come from a pretrained file, not the checkpoint
        self.base: Optional[dict] = None  # identity of the file the base weights were loaded from
        self.base_path: Optional[str] = None
        self.expected: Optional[dict] = None  # identity a loaded checkpoint recorded

    def get_extra_state(self) -> dict:
        return dict(settings=dict(self.settings), adapters_only=self.adapters_only, base=self.base,
                    base_path=self.base_path)

    def set_extra_state(self, state: dict) -> None:
        if state.get('settings') != self.settings:
            raise CheckpointError(f"the checkpoint's adapters are lora={state.get('settings')}, the config's backbone "
                                  f'has lora={self.settings}: use the config the checkpoint was trained with')
        if not state.get('adapters_only'):
            return  # the checkpoint holds the base weights too
        if not self.adapters_only:
            raise CheckpointError(
                f"the checkpoint holds only LoRA adapters over the base weights of {state.get('base_path')}, but "
                "the config's backbone has no pretrained file to take them from: set its "
                "init_cfg=dict(type='Pretrained', checkpoint=...) to that file")
        self.expected = dict(identity=state.get('base'), path=state.get('base_path'))
        self.check_base()

    def base_loaded(self, path: str) -> None:
        """The base weights were just loaded from ``path``: record its identity and check it."""
        self.base, self.base_path = checkpoint_identity(str(path)), str(path)
        self.check_base()

    def check_base(self) -> None:
        if self.expected is None or self.base is None or self.expected['identity'] is None:
            return
        if not _same_weights(self.expected['identity'], self.base):
            raise CheckpointError(
                f"wrong base weights for these LoRA adapters: they were trained over {self.expected['path']} "
                f"[{_describe(self.expected['identity'])}], but the config's pretrained file is {self.base_path} "
                f'[{_describe(self.base)}]. Point the backbone\'s init_cfg checkpoint at the file the adapters were '
                'trained on')

    def extra_repr(self) -> str:
        return ', '.join(f'{k}={v}' for k, v in self.settings.items())


def _drop_base_weights(module: nn.Module, state_dict: dict, prefix: str, local_metadata) -> None:
    """State-dict post-hook: an adapters-only backbone leaves its base weights out (they are the pretrained file)."""
    record = getattr(module, RECORD, None)
    if not isinstance(record, LoRARecord) or not record.adapters_only:
        return
    for key in [k for k in state_dict if k.startswith(prefix)]:
        if not is_adapter_name(key[len(prefix):]):
            del state_dict[key]


def _base_weights_not_missing(module: nn.Module, incompatible) -> None:
    """Load post-hook: an adapters-only checkpoint lacks the base weights by design; they come from the pretrained
    file (whose identity the record checks)."""
    record = getattr(module, RECORD, None)
    if not isinstance(record, LoRARecord) or not record.adapters_only:
        return
    # every name of a shared tensor too (HFEncoder's final_norm is also model.layernorm): each is a state-dict key
    base = {n for n, _ in [*module.named_parameters(remove_duplicate=False),
                           *module.named_buffers(remove_duplicate=False)] if not is_adapter_name(n)}

    def is_base(key: str) -> bool:
        parts = key.split('.')
        return any('.'.join(parts[i:]) in base for i in range(len(parts)))

    incompatible.missing_keys[:] = [k for k in incompatible.missing_keys if not is_base(k)]


def attach_lora(model: nn.Module, lora: dict, depth: int, adapters_only: bool, layers_pattern: str = 'blocks',
                owner: Optional[nn.Module] = None) -> LoRARecord:
    """Injects peft LoRA layers into ``model`` in place (see the module docstring); only they require gradients.

    ``adapters_only``: the base weights come from a pretrained file, so checkpoints leave them out.
    ``layers_pattern``: the name of the block list (timm's ``blocks``, transformers' ``layer``), for ``blocks``.
    ``owner``: the backbone holding ``model`` (default ``model``), whose state dict the checkpoint hooks act on;
    the caller sets the returned record as ``owner.lora``.
    """
    import_peft()
    from peft import LoraConfig
    from peft.functional import inject_adapter_in_model
    settings = lora_settings(lora, depth)
    config = LoraConfig(r=settings['rank'], lora_alpha=settings['alpha'], lora_dropout=settings['dropout'],
                        target_modules=list(settings['targets']), bias='none', init_lora_weights=True,
                        layers_to_transform=settings['blocks'],
                        layers_pattern=layers_pattern if settings['blocks'] is not None else None)
    from torch._subclasses.fake_tensor import unset_fake_temporarily
    try:
        # low_cpu_mem_usage: peft makes the adapters on the meta device; they are created below in fp32 where their
        # base layer is. Outside any fake-tensor mode (the memory plan builds models on fake tensors): peft moves
        # adapters with Module.to(), which cannot swap fake parameters in place.
        with unset_fake_temporarily():
            inject_adapter_in_model(config, model, adapter_name=ADAPTER, low_cpu_mem_usage=True)
    except ValueError as e:  # peft: no module matched
        raise ValueError(f"lora.targets {settings['targets']} match no linear layer of {type(model).__name__}: {e}")
    unmatched = [t for t in settings['targets'] if not any(n.endswith(f'.{t}') for n, _ in lora_layers(model))]
    if unmatched:
        raise ValueError(f'lora.targets {unmatched} match no linear layer of {type(model).__name__} (module names '
                         f'inside a block, e.g. {list(DEFAULT_TARGETS)})')
    init_meta_adapters(model)
    owner = model if owner is None else owner
    owner.register_state_dict_post_hook(_drop_base_weights)
    owner.register_load_state_dict_post_hook(_base_weights_not_missing)
    return LoRARecord(settings, adapters_only)


def needs_base_weights(module: nn.Module) -> bool:
    """A backbone with adapters-only LoRA whose base weights have not been loaded from its pretrained file yet."""
    record = getattr(module, RECORD, None)
    return isinstance(record, LoRARecord) and record.adapters_only and record.base is None


def lora_layers(model: nn.Module) -> List:
    """(name, peft LoRA layer) pairs of ``model``."""
    from peft.tuners.lora import LoraLayer
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoraLayer)]


def init_meta_adapters(model: nn.Module) -> int:
    """Adapters on the meta device whose base layer is not (any more) are created where it is, in fp32 (as
    get_peft_model's ``autocast_adapter_dtype`` keeps them over a bf16 base), and initialised by peft's own
    ``reset_lora_parameters`` (A random as nn.Linear, B zero). Returns how many layers."""
    count = 0
    for _, layer in lora_layers(model):
        device = layer.get_base_layer().weight.device
        adapters = [layer.lora_A[ADAPTER], layer.lora_B[ADAPTER]]
        if device.type == 'meta' or not any(a.weight.is_meta for a in adapters):
            continue
        for linear in adapters:  # assigned, not .to()/.to_empty(): those cannot swap fake tensors in place
            linear.weight = nn.Parameter(torch.empty(linear.weight.shape, dtype=torch.float32, device=device))
        layer.reset_lora_parameters(ADAPTER, init_lora_weights=True)
        count += 1
    return count


def pretrained_names(model: nn.Module) -> Dict[str, str]:
    """{name in a pretrained file: parameter path in ``model``} for the base weights (adapters left out)."""
    return {base_name(n): n for n, _ in model.named_parameters() if not is_adapter_name(n)}


@torch.no_grad()
def merge_lora(model: nn.Module, float32: bool = False) -> int:
    """Merges each adapter into its base weight and puts the plain base layer back, in place: afterwards ``model``
    is the backbone without ``lora`` (its state dict: the usual names, base weights included).

    peft's own ``merge(safe_merge=True)`` computes ``W + scale * B @ A`` in the adapters' fp32, adds it in the base
    weight's dtype and refuses a non-finite result. ``float32``: the whole backbone is widened to fp32 first, so the
    merged weights are not rounded to a bf16 base's precision. Returns how many layers were merged.
    """
    layers = lora_layers(model)
    if float32:
        model.float()
    for name, layer in layers:
        base = layer.get_base_layer()
        layer.merge(safe_merge=True, adapter_names=[ADAPTER])
        parent_name, _, child = name.rpartition('.')
        setattr(model.get_submodule(parent_name) if parent_name else model, child, base)
    if hasattr(model, 'peft_config'):
        del model.peft_config
    if isinstance(getattr(model, RECORD, None), LoRARecord):
        setattr(model, RECORD, None)
    return len(layers)


def trainable_summary(model: nn.Module) -> str:
    total = sum(p.numel() for p in model.parameters())
    train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return f'{train:,} of {total:,} parameters train ({100 * train / max(total, 1):.2f}%)'


__all__ = ['DEFAULT_TARGETS', 'LoRARecord', 'attach_lora', 'base_name', 'import_peft', 'init_meta_adapters',
           'is_adapter_name', 'lora_layers', 'lora_settings', 'merge_lora', 'needs_base_weights', 'pretrained_names',
           'trainable_summary']
