"""The checkpoint formats InternViT comes in: one class per format, all in :data:`FORMATS`.

Our key names are those of OpenGVLab's ``.pth`` releases (``blocks.N.attn.qkv.weight`` ...).
Each format is one :class:`CheckpointFormat` subclass holding all its knowledge, as timm's
``checkpoint_filter_fn`` dispatches on a marker key to one converter per source. This module is the
table: the base class, :data:`FORMATS` and what reads it. It imports no format: each registers itself
with :func:`register_format` where it is defined (:mod:`.backbone_formats`: the backbone's own files;
:mod:`.internvl_tasks`: InternVL's task models), and the package imports those modules.

``name``
    what ``tools/convert_checkpoint.py --to`` and ``save_checkpoint(fmt=...)`` call it.
``marker``
    a key only this format has. A checkpoint is of the first format in :data:`FORMATS` whose
    marker is one of its keys or ends one of them after a dot; what stands before the marker is
    the checkpoint's prefix (``vision_model.`` in InternVL chat models, ``backbone.`` in a
    detector's state dict) and is stripped before :meth:`~CheckpointFormat.to_ours` sees a key.
    Longer markers are tried first: a marker that ends in another (``embeddings.cls_token``,
    ``cls_token``) is the more specific one.
``to_ours(key)``
    one key (prefix stripped) -> our name. A key the format does not know comes back unchanged,
    so the model reports it as unexpected. Formats that must merge several tensors into one
    (transformers' q, k, v -> our qkv) override :meth:`~CheckpointFormat.convert` instead.
``from_ours(state_dict)``
    our names -> the format's, for writing.
``whole_model``
    the format holds a whole task model (backbone, neck, heads: InternVL's released segmentation
    and classification checkpoints, :mod:`.internvl_tasks`) and ``to_ours`` maps to the model's
    state dict names (``backbone.blocks.N...``, ``neck...``, ``decode_head...``). Such formats are
    recognised where a whole model is loaded (:func:`detect_format` with ``whole_model=True``),
    never where a backbone is read: a segmentation file given as a backbone's checkpoint is read
    by its ``backbone.`` prefix as the ``.pth`` format.
``hf_directory`` / ``matches_config(cfg)`` / ``arch_from_config(cfg)`` / ``config_for(arch)``
    for Hugging Face directory formats: whether a ``config.json`` is this format's, the
    architecture it describes, and the one to write. ``arch`` is the dict the backbone is built
    from: ``dict(arch=dict(embed_dims, depth, num_heads, mlp_dims, norm_type, layer_norm_eps,
    qk_normalization, qkv_bias), patch_size=, pretrain_size=, in_channels=)``.

Adding a format is one subclass decorated with :func:`register_format`, in a module the package imports,
and one test (tests/test_checkpoint.py, ``test_format_*``). Nothing here imports the models: this package is
the layer below them.
"""
from __future__ import annotations

from typing import Dict, Iterable, Iterator, List, Optional, Tuple, Type, TypeVar

import torch


class CheckpointFormat:
    """One checkpoint format (see the module docstring for what each member means)."""

    name: str = ''
    marker: str = ''
    whole_model = False  # a task model's checkpoint (backbone + neck + heads), not a backbone's
    hf_directory = False  # a Hugging Face directory with a config.json

    def detect(self, keys: Iterable[str]) -> Optional[str]:
        """The checkpoint's prefix if ``keys`` are of this format, else None."""
        for key in keys:
            if key == self.marker or key.endswith('.' + self.marker):
                return key[:len(key) - len(self.marker)]
        return None

    def to_ours(self, key: str) -> str:
        return key

    def convert(self, items: Iterable[Tuple[str, torch.Tensor]]) -> Iterator[Tuple[str, torch.Tensor]]:
        """(key, tensor) pairs of this format (prefix stripped) -> pairs under our names, one at a time."""
        for key, value in items:
            yield self.to_ours(key), value

    def from_ours(self, state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        return dict(state_dict)

    def matches_config(self, cfg: dict) -> bool:
        return False

    def arch_from_config(self, cfg: dict) -> dict:
        raise NotImplementedError(f'the {self.name} format has no config.json')

    def config_for(self, arch: dict) -> dict:
        raise NotImplementedError(f'the {self.name} format has no config.json')

    def __repr__(self):
        return f'<checkpoint format {self.name!r}>'


# name -> format, in the order the formats registered (tools/convert_checkpoint.py lists them so)
FORMATS: Dict[str, CheckpointFormat] = {}
_Format = TypeVar('_Format', bound=Type[CheckpointFormat])


def register_format(cls: _Format) -> _Format:
    """Class decorator: one instance of the format ``cls`` in :data:`FORMATS` under its ``name``."""
    if not cls.name or not cls.marker:
        raise ValueError(f'checkpoint format {cls.__name__} needs a name and a marker')
    if cls.name in FORMATS:
        raise ValueError(f'two checkpoint formats are named {cls.name!r}: {type(FORMATS[cls.name]).__name__} and '
                         f'{cls.__name__}')
    FORMATS[cls.name] = cls()
    return cls


def in_detection_order(whole_model: bool) -> List[CheckpointFormat]:
    """The backbone formats (or the whole-model ones), longest marker first: a marker that ends in another
    one is longer than it, and the more specific of the two."""
    return sorted((f for f in FORMATS.values() if f.whole_model == whole_model), key=lambda f: -len(f.marker))


def get_format(name: str) -> CheckpointFormat:
    if name not in FORMATS:
        raise ValueError(f'unknown checkpoint format {name!r}; known: {sorted(FORMATS)}')
    return FORMATS[name]


def detect_format(keys: Iterable[str], whole_model: bool = False) -> Tuple[str, str]:
    """(format name, prefix) of a checkpoint from its key names: a backbone's format, or with
    ``whole_model`` a whole task model's (ValueError if it is none of those)."""
    keys = list(keys)
    formats = in_detection_order(whole_model)
    for fmt in formats:
        prefix = fmt.detect(keys)
        if prefix is not None:
            return fmt.name, prefix
    sample = ', '.join(keys[:5]) or 'no keys at all'
    markers = sorted(f.marker for f in formats)
    raise ValueError(f'not an InternViT checkpoint: found none of {markers} (first keys: {sample})')


def arch_from_config(cfg: dict) -> Tuple[dict, str]:
    """(backbone kwargs, format name) from a Hugging Face ``config.json`` of any directory format."""
    for fmt in FORMATS.values():
        if fmt.hf_directory and fmt.matches_config(cfg):
            return fmt.arch_from_config(cfg), fmt.name
    raise ValueError(f'config.json of no known format (fields: {sorted(cfg)[:10]})')


def convert_from_native(state_dict: Dict[str, torch.Tensor], fmt: str) -> Dict[str, torch.Tensor]:
    """Our keys -> ``fmt``'s keys."""
    return get_format(fmt).from_ours(state_dict)
