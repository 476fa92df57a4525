"""The backbone's own checkpoint formats: OpenGVLab's ``.pth`` releases (our names), OpenGVLab's Hugging Face
directories and transformers' ``InternVLVisionModel`` directories. Each registers itself in the table
(:data:`.formats.FORMATS`); what each member means is in :mod:`.formats`.
"""
from __future__ import annotations

import re
from typing import Dict, Tuple

import torch

from .formats import CheckpointFormat, register_format

FORMAT_PTH = 'pth'
FORMAT_OPENGVLAB_HF = 'opengvlab-hf'
FORMAT_TRANSFORMERS = 'transformers'

_BLOCK = re.compile(r'^blocks\.(\d+)\.(.+)$')


@register_format
class PthFormat(CheckpointFormat):
    """OpenGVLab's ``.pth`` releases (segmentation/classification), and our own files: our names."""

    name = FORMAT_PTH
    marker = 'cls_token'


class _HFDirectory(CheckpointFormat):
    """What the two Hugging Face layouts share: a config.json with the same core fields."""

    hf_directory = True
    top: Dict[str, str] = {}  # theirs -> ours, outside the blocks

    def _core_arch(self, cfg: dict, qk_key: str, bias_key: str) -> dict:
        cfg = cfg.get('vision_config', cfg)  # a whole InternVL chat model: only its vision tower is ours
        need = ('hidden_size', 'num_hidden_layers', 'num_attention_heads', 'intermediate_size')
        missing = [k for k in need if k not in cfg]
        if missing:
            raise ValueError(f'config.json does not describe an InternViT: it lacks {missing}')
        arch = dict(embed_dims=cfg['hidden_size'], depth=cfg['num_hidden_layers'],
                    num_heads=cfg['num_attention_heads'], mlp_dims=cfg['intermediate_size'],
                    norm_type=cfg.get('norm_type', 'rms_norm'), layer_norm_eps=cfg.get('layer_norm_eps', 1e-6),
                    qk_normalization=cfg.get(qk_key, False), qkv_bias=cfg.get(bias_key, False))
        return dict(arch=arch, patch_size=_square(cfg.get('patch_size', 14)),
                    pretrain_size=_square(cfg.get('image_size', 224)), in_channels=cfg.get('num_channels', 3))

    def from_ours(self, state_dict):
        top = {ours: theirs for theirs, ours in self.top.items()}
        out = {}
        for key, value in state_dict.items():
            if key in top:
                out[top[key]] = value
            else:
                out.update(self._block_tensor_to_theirs(key, *_block(key), value))
        return out

    def _block_tensor_to_theirs(self, key: str, idx: str, rest: str, value: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Our block ``idx``'s tensor ``rest`` (``key`` in full) under this layout's name(s)."""
        raise NotImplementedError

    @staticmethod
    def _core_config(arch: dict) -> dict:
        a = arch['arch']
        return dict(hidden_size=a['embed_dims'], num_hidden_layers=a['depth'], num_attention_heads=a['num_heads'],
                    intermediate_size=a['mlp_dims'], norm_type=a['norm_type'], layer_norm_eps=a['layer_norm_eps'],
                    hidden_act='gelu', num_channels=arch.get('in_channels', 3))


@register_format
class OpenGVLabHFFormat(_HFDirectory):
    """OpenGVLab's Hugging Face directories (remote-code ``InternVisionModel``), e.g.
    ``InternViT-6B-448px-V1-5``; chat models hold it under ``vision_model.``."""

    name = FORMAT_OPENGVLAB_HF
    marker = 'embeddings.class_embedding'
    top = {'embeddings.class_embedding': 'cls_token', 'embeddings.position_embedding': 'pos_embed',
           'embeddings.patch_embedding.weight': 'patch_embed.proj.weight',
           'embeddings.patch_embedding.bias': 'patch_embed.proj.bias'}
    _layer = re.compile(r'^encoder\.layers\.(\d+)\.(.+)$')
    _renamed = {'ls1': 'ls1.gamma', 'ls2': 'ls2.gamma'}  # their other block names are ours
    _renamed_back = {ours: theirs for theirs, ours in _renamed.items()}

    def to_ours(self, key):
        if key in self.top:
            return self.top[key]
        m = self._layer.match(key)
        if not m:
            return key
        rest = m.group(2)
        return f'blocks.{m.group(1)}.{self._renamed.get(rest, rest)}'

    def _block_tensor_to_theirs(self, key, idx, rest, value):
        return {f'encoder.layers.{idx}.{self._renamed_back.get(rest, rest)}': value}

    def matches_config(self, cfg):
        cfg = cfg.get('vision_config', cfg)
        return not TransformersFormat().matches_config(cfg) and 'hidden_size' in cfg

    def arch_from_config(self, cfg):
        return self._core_arch(cfg, 'qk_normalization', 'qkv_bias')

    def config_for(self, arch):
        a = arch['arch']
        return dict(self._core_config(arch), architectures=['InternVisionModel'], model_type='intern_vit_6b',
                    qk_normalization=a['qk_normalization'], qkv_bias=a['qkv_bias'],
                    image_size=arch['pretrain_size'], patch_size=arch['patch_size'], drop_path_rate=0.0,
                    use_flash_attn=False)


@register_format
class TransformersFormat(_HFDirectory):
    """transformers' ``InternVLVisionModel`` directories (q, k and v are separate tensors)."""

    name = FORMAT_TRANSFORMERS
    marker = 'embeddings.cls_token'  # tried before 'cls_token' (pth), which it ends in: it is longer
    top = {'embeddings.cls_token': 'cls_token', 'embeddings.position_embeddings': 'pos_embed',
           'embeddings.patch_embeddings.projection.weight': 'patch_embed.proj.weight',
           'embeddings.patch_embeddings.projection.bias': 'patch_embed.proj.bias'}
    layer = {  # their per-block names -> ours (q/k/v_proj merge into qkv: see convert)
        'layernorm_before': 'norm1', 'layernorm_after': 'norm2', 'attention.q_norm': 'attn.q_norm',
        'attention.k_norm': 'attn.k_norm', 'attention.projection_layer': 'attn.proj', 'lambda_1': 'ls1.gamma',
        'lambda_2': 'ls2.gamma', 'mlp.fc1': 'mlp.fc1', 'mlp.fc2': 'mlp.fc2'}
    _layer = re.compile(r'^encoder\.layer\.(\d+)\.(.+)$')
    _qkv = re.compile(r'^encoder\.layer\.(\d+)\.attention\.([qkv])_proj\.(weight|bias)$')

    def to_ours(self, key):
        if key in self.top:
            return self.top[key]
        m = self._layer.match(key)
        if not m:
            return key
        idx, rest = m.groups()
        for theirs, ours in self.layer.items():
            if rest == theirs or rest.startswith(theirs + '.'):
                return f'blocks.{idx}.{ours}{rest[len(theirs):]}'
        return key

    def convert(self, items):
        # q, k and v of one block may lie in different shards: each waits here for its siblings.
        pending: Dict[Tuple[str, str], Dict[str, torch.Tensor]] = {}
        for key, value in items:
            m = self._qkv.match(key)
            if not m:
                yield self.to_ours(key), value
                continue
            idx, part, kind = m.groups()
            parts = pending.setdefault((idx, kind), {})
            parts[part] = value
            if len(parts) == 3:
                del pending[(idx, kind)]
                yield f'blocks.{idx}.attn.qkv.{kind}', torch.cat([parts['q'], parts['k'], parts['v']], dim=0)
        for (idx, kind), parts in pending.items():  # siblings never arrived: reported as unexpected keys
            for part, value in parts.items():
                yield f'encoder.layer.{idx}.attention.{part}_proj.{kind}', value

    def _block_tensor_to_theirs(self, key, idx, rest, value):
        if rest.startswith('attn.qkv.'):
            kind = rest.rsplit('.', 1)[1]
            return {f'encoder.layer.{idx}.attention.{part}_proj.{kind}': tensor.clone()
                    for part, tensor in zip('qkv', value.chunk(3, dim=0))}
        for theirs, ours in self.layer.items():
            if rest == ours or rest.startswith(ours + '.'):
                return {f'encoder.layer.{idx}.{theirs}{rest[len(ours):]}': value}
        raise KeyError(f'{key!r} has no transformers InternVLVisionModel name')

    def matches_config(self, cfg):
        cfg = cfg.get('vision_config', cfg)
        return cfg.get('model_type') == 'internvl_vision' or 'use_qk_norm' in cfg

    def arch_from_config(self, cfg):
        return self._core_arch(cfg, 'use_qk_norm', 'attention_bias')

    def config_for(self, arch):
        a = arch['arch']
        return dict(self._core_config(arch), architectures=['InternVLVisionModel'], model_type='internvl_vision',
                    use_qk_norm=a['qk_normalization'], attention_bias=a['qkv_bias'],
                    image_size=[arch['pretrain_size']] * 2, patch_size=[arch['patch_size']] * 2,
                    use_mean_pooling=True, layer_scale_init_value=0.1)


def _block(key: str) -> Tuple[str, str]:
    m = _BLOCK.match(key)
    if not m:
        raise KeyError(f'{key!r} is not an InternViT parameter')
    return m.group(1), m.group(2)


def _square(v) -> int:
    if isinstance(v, (list, tuple)):
        if len(set(v)) != 1:
            raise ValueError(f'non-square sizes are not supported in checkpoint configs: {v}')
        return int(v[0])
    return int(v)
