"""Key names and configs of the InternViT checkpoint formats, converted to and from ours.

Our names are those of OpenGVLab's ``.pth`` releases (``FORMAT_PTH``). The two
Hugging Face layouts are OpenGVLab's remote-code ``InternVisionModel``
(``FORMAT_OPENGVLAB_HF``) and transformers' ``InternVLVisionModel``
(``FORMAT_TRANSFORMERS``), whose q, k and v are separate tensors.
"""
from __future__ import annotations

import re
from typing import Dict, Iterable, Optional, Tuple

import torch

FORMAT_PTH = 'pth'
FORMAT_OPENGVLAB_HF = 'opengvlab-hf'
FORMAT_TRANSFORMERS = 'transformers'
FORMATS = (FORMAT_PTH, FORMAT_OPENGVLAB_HF, FORMAT_TRANSFORMERS)

# The key that marks each format; what stands before it is the checkpoint's prefix
# (``vision_model.`` in InternVL chat models, ``model.vision_tower.`` in transformers' InternVL).
# The most specific first: transformers' 'embeddings.cls_token' also ends in 'cls_token'.
ANCHORS = {
    FORMAT_TRANSFORMERS: 'embeddings.cls_token',
    FORMAT_OPENGVLAB_HF: 'embeddings.class_embedding',
    FORMAT_PTH: 'cls_token',
}

_OPENGVLAB_HF_TOP = {
    'embeddings.class_embedding': 'cls_token',
    'embeddings.position_embedding': 'pos_embed',
    'embeddings.patch_embedding.weight': 'patch_embed.proj.weight',
    'embeddings.patch_embedding.bias': 'patch_embed.proj.bias',
}
_TRANSFORMERS_TOP = {
    'embeddings.cls_token': 'cls_token',
    'embeddings.position_embeddings': 'pos_embed',
    'embeddings.patch_embeddings.projection.weight': 'patch_embed.proj.weight',
    'embeddings.patch_embeddings.projection.bias': 'patch_embed.proj.bias',
}
# transformers' per-layer names -> ours (q/k/v_proj are handled apart: they merge into qkv)
_TRANSFORMERS_LAYER = {
    'layernorm_before': 'norm1',
    'layernorm_after': 'norm2',
    'attention.q_norm': 'attn.q_norm',
    'attention.k_norm': 'attn.k_norm',
    'attention.projection_layer': 'attn.proj',
    'lambda_1': 'ls1.gamma',
    'lambda_2': 'ls2.gamma',
    'mlp.fc1': 'mlp.fc1',
    'mlp.fc2': 'mlp.fc2',
}
_OPENGVLAB_HF_LAYER = re.compile(r'^encoder\.layers\.(\d+)\.(.+)$')
_TRANSFORMERS_LAYER_RE = re.compile(r'^encoder\.layer\.(\d+)\.(.+)$')
_QKV_RE = re.compile(r'^attention\.([qkv])_proj\.(weight|bias)$')
_PTH_BLOCK = re.compile(r'^blocks\.(\d+)\.(.+)$')


def detect_format(keys: Iterable[str]) -> Tuple[str, str]:
    """(format, prefix) of a checkpoint from its key names."""
    keys = list(keys)
    for fmt, anchor in ANCHORS.items():
        for k in keys:
            if k == anchor or k.endswith('.' + anchor):
                return fmt, k[:len(k) - len(anchor)]
    sample = ', '.join(keys[:5]) or 'no keys at all'
    raise ValueError('not an InternViT checkpoint: found none of '
                     f"{sorted(ANCHORS.values())} (first keys: {sample})")


class KeyConverter:
    """Renames one format's keys to ours, shard by shard.

    transformers' q, k and v of one layer may lie in different shards, so they wait
    here until all three have arrived and are then concatenated into ``qkv``.
    """

    def __init__(self, fmt: str, prefix: str = ''):
        if fmt not in FORMATS:
            raise ValueError(f'unknown checkpoint format {fmt!r}; known: {FORMATS}')
        self.fmt, self.prefix = fmt, prefix
        self.pending: Dict[Tuple[int, str], Dict[str, torch.Tensor]] = {}
        self.ignored = []

    def __call__(self, shard: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        out = {}
        for key, value in shard.items():
            if not key.startswith(self.prefix):
                self.ignored.append(key)
                continue
            name = self._rename(key[len(self.prefix):], value, out)
            if name is not None:
                out[name] = value
        return out

    def _rename(self, key: str, value: torch.Tensor, out: dict) -> Optional[str]:
        if self.fmt == FORMAT_PTH:
            return key
        if self.fmt == FORMAT_OPENGVLAB_HF:
            if key in _OPENGVLAB_HF_TOP:
                return _OPENGVLAB_HF_TOP[key]
            m = _OPENGVLAB_HF_LAYER.match(key)
            if m:
                rest = m.group(2)
                rest = {'ls1': 'ls1.gamma', 'ls2': 'ls2.gamma'}.get(rest, rest)
                return f'blocks.{m.group(1)}.{rest}'
            return key  # not ours: reported as unexpected by the loader
        if key in _TRANSFORMERS_TOP:
            return _TRANSFORMERS_TOP[key]
        m = _TRANSFORMERS_LAYER_RE.match(key)
        if not m:
            return key
        idx, rest = int(m.group(1)), m.group(2)
        qkv = _QKV_RE.match(rest)
        if qkv:
            part, kind = qkv.groups()
            parts = self.pending.setdefault((idx, kind), {})
            parts[part] = value
            if len(parts) == 3:
                out[f'blocks.{idx}.attn.qkv.{kind}'] = torch.cat([parts['q'], parts['k'], parts['v']], dim=0)
                del self.pending[(idx, kind)]
            return None
        for theirs, ours in _TRANSFORMERS_LAYER.items():
            if rest == theirs or rest.startswith(theirs + '.'):
                return f'blocks.{idx}.{ours}{rest[len(theirs):]}'
        return key

    def unfinished(self):
        """q/k/v tensors whose siblings never arrived."""
        return [f'encoder.layer.{i}.attention.{{q,k,v}}_proj.{kind}' for (i, kind) in self.pending]


def convert_from_native(state_dict: Dict[str, torch.Tensor], fmt: str) -> Dict[str, torch.Tensor]:
    """Our keys -> ``fmt``'s keys (the inverse of :class:`KeyConverter`)."""
    if fmt == FORMAT_PTH:
        return dict(state_dict)
    top = {v: k for k, v in (_OPENGVLAB_HF_TOP if fmt == FORMAT_OPENGVLAB_HF else _TRANSFORMERS_TOP).items()}
    out = {}
    for key, value in state_dict.items():
        if key in top:
            out[top[key]] = value
            continue
        m = _PTH_BLOCK.match(key)
        if not m:
            raise KeyError(f'{key!r} is not an InternViT parameter')
        idx, rest = m.groups()
        if fmt == FORMAT_OPENGVLAB_HF:
            rest = {'ls1.gamma': 'ls1', 'ls2.gamma': 'ls2'}.get(rest, rest)
            out[f'encoder.layers.{idx}.{rest}'] = value
        elif rest.startswith('attn.qkv.'):
            kind = rest.rsplit('.', 1)[1]
            for part, tensor in zip('qkv', value.chunk(3, dim=0)):
                out[f'encoder.layer.{idx}.attention.{part}_proj.{kind}'] = tensor.clone()
        else:
            for theirs, ours in _TRANSFORMERS_LAYER.items():
                if rest == ours or rest.startswith(ours + '.'):
                    out[f'encoder.layer.{idx}.{theirs}{rest[len(ours):]}'] = value
                    break
            else:
                raise KeyError(f'{key!r} has no transformers InternVLVisionModel name')
    return out


def _pair(v) -> int:
    if isinstance(v, (list, tuple)):
        if len(set(v)) != 1:
            raise ValueError(f'non-square sizes are not supported in checkpoint configs: {v}')
        return int(v[0])
    return int(v)


def arch_from_config(cfg: dict) -> Tuple[dict, str]:
    """(InternViT kwargs, format) from a Hugging Face ``config.json`` of either layout."""
    if 'vision_config' in cfg:  # a whole InternVL chat model: only its vision tower is ours
        cfg = cfg['vision_config']
    is_transformers = cfg.get('model_type') == 'internvl_vision' or 'use_qk_norm' in cfg
    need = ('hidden_size', 'num_hidden_layers', 'num_attention_heads', 'intermediate_size')
    missing = [k for k in need if k not in cfg]
    if missing:
        raise ValueError(f'config.json does not describe an InternViT: it lacks {missing}')
    arch = dict(
        embed_dims=cfg['hidden_size'],
        depth=cfg['num_hidden_layers'],
        num_heads=cfg['num_attention_heads'],
        mlp_dims=cfg['intermediate_size'],
        norm_type=cfg.get('norm_type', 'rms_norm'),
        layer_norm_eps=cfg.get('layer_norm_eps', 1e-6),
        qk_normalization=cfg.get('use_qk_norm' if is_transformers else 'qk_normalization', False),
        qkv_bias=cfg.get('attention_bias' if is_transformers else 'qkv_bias', False),
    )
    kwargs = dict(arch=arch, patch_size=_pair(cfg.get('patch_size', 14)),
                  pretrain_size=_pair(cfg.get('image_size', 224)))
    return kwargs, FORMAT_TRANSFORMERS if is_transformers else FORMAT_OPENGVLAB_HF


def config_for(model, fmt: str) -> dict:
    """The ``config.json`` a Hugging Face directory of ``fmt`` carries for ``model``."""
    a = model.arch
    common = dict(hidden_size=a['embed_dims'], num_hidden_layers=a['depth'], num_attention_heads=a['num_heads'],
                  intermediate_size=a['mlp_dims'], norm_type=a['norm_type'], layer_norm_eps=a['layer_norm_eps'],
                  hidden_act='gelu', num_channels=model.patch_embed.proj.in_channels)
    if fmt == FORMAT_TRANSFORMERS:
        return dict(common, architectures=['InternVLVisionModel'], model_type='internvl_vision',
                    use_qk_norm=a['qk_normalization'], attention_bias=a['qkv_bias'],
                    image_size=[model.pretrain_size] * 2, patch_size=[model.patch_size] * 2,
                    use_mean_pooling=True, layer_scale_init_value=0.1)
    if fmt == FORMAT_OPENGVLAB_HF:
        return dict(common, architectures=['InternVisionModel'], model_type='intern_vit_6b',
                    qk_normalization=a['qk_normalization'], qkv_bias=a['qkv_bias'],
                    image_size=model.pretrain_size, patch_size=model.patch_size,
                    drop_path_rate=0.0, use_flash_attn=False)
    raise ValueError(f'{fmt!r} is not a Hugging Face directory format')
