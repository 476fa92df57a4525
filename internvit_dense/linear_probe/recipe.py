"""A recipe probe (``LinearProbeClassifier`` trained by ``tools/train.py``) scored from cached features.

The cache holds features of one backbone checkpoint at one input size; a probe trained
on another backbone, another crop or other blocks would still produce numbers, just
wrong ones. :func:`check_against_cache` compares what the checkpoint's config says
with the cache's identity and refuses a mismatch; what it cannot compare (a pretrained
file no longer on this machine, a backbone whose weights live in the checkpoint) it
reports as unverified instead of passing silently.
"""
from __future__ import annotations

import os.path as osp
from dataclasses import dataclass, field
from typing import List, Optional

from internvit_dense.checkpoint.hub import HubCheckpointError, resolve_checkpoint

from .cache import CacheError, checkpoint_identity
from .grid import FeatureSpec, ProbeClassifier

ARCH_FIELDS = ('embed_dims', 'depth', 'num_heads', 'mlp_dims', 'norm_type', 'qk_normalization', 'qkv_bias')


@dataclass
class RecipeProbe:
    classifier: ProbeClassifier
    model_cfg: Optional[dict]  # None: a checkpoint without mmengine's meta.cfg
    crop_size: Optional[int]
    backbone_in_checkpoint: bool = False
    verified: List[str] = field(default_factory=list)
    unverified: List[str] = field(default_factory=list)


def load_recipe_probe(path: str) -> RecipeProbe:
    """The head of a ``LinearProbeClassifier`` checkpoint, with the model config it was trained with."""
    from mmengine.config import Config

    from internvit_dense.checkpoint.model_checkpoints import ModelCheckpointError, read_model_checkpoint
    try:  # ours, or InternVL's released head (intern_vit_6b_224px_head.pth) as it is
        ckpt = read_model_checkpoint(path)
    except ModelCheckpointError as e:
        raise CacheError(str(e)) from None
    sd = ckpt['state_dict']
    missing = [k for k in ('head.bn.running_mean', 'head.bn.running_var', 'head.fc.weight', 'head.fc.bias')
               if k not in sd]
    if missing:
        raise CacheError(f'{path} is not a LinearProbeClassifier checkpoint: no {", ".join(missing)}')
    model_cfg, crop = None, None
    cfg_text = (ckpt['meta'] or {}).get('cfg')
    if ckpt['format'] == 'internvl-cls':
        model_cfg, crop = _internvl_recipe(ckpt['info'])
    elif cfg_text:
        cfg = Config.fromstring(cfg_text, '.py')
        model_cfg = cfg.model.to_dict()
        crop = _eval_crop(cfg)
    n_last = (model_cfg or {}).get('n_last_blocks', 1)
    avgpool = (model_cfg or {}).get('avgpool', True)
    spec = FeatureSpec(n_last, avgpool)
    weight, bias = sd['head.fc.weight'].float().t(), sd['head.fc.bias'].float()
    if 'head.bn.weight' in sd:  # an affine BatchNorm (InternVL's head): folded into the linear layer, exactly
        gamma, beta = sd['head.bn.weight'].float(), sd['head.bn.bias'].float()
        weight, bias = gamma[:, None] * weight, bias + beta @ weight
    clf = ProbeClassifier(spec=spec.name, keys=[], lr=float('nan'), mean=sd['head.bn.running_mean'].float(),
                          var=sd['head.bn.running_var'].float(), eps=(model_cfg or {}).get('bn_eps', 1e-6),
                          weight=weight.contiguous(), bias=bias)
    return RecipeProbe(clf, model_cfg, crop, backbone_in_checkpoint=any(k.startswith('backbone.') for k in sd))


def _internvl_recipe(info: dict):
    """The model config InternVL's head was trained with, as far as its pickled training config says
    (classification/configs/intern_vit_6b_1k_224.yaml: InternViT-6B, last block, [cls || mean patch], 224 px)."""
    if None in (info.get('depth'), info.get('embed_dims'), info.get('num_heads')):
        return None, None  # no readable config beside the weights: nothing to verify against
    # InternVL's InternViT6B: RMSNorm blocks, MLP ratio and qk-norm / qkv bias as its config says
    arch = dict(embed_dims=info['embed_dims'], depth=info['depth'], num_heads=info['num_heads'],
                mlp_dims=int(info['embed_dims'] * (info.get('mlp_ratio') or 4)), norm_type='rms_norm',
                qk_normalization=info.get('qk_normalization') is not False, qkv_bias=bool(info.get('qkv_bias')))
    backbone = dict(type='InternViT', arch=arch)
    if info.get('pretrained'):
        backbone['init_cfg'] = dict(type='Pretrained', checkpoint=info['pretrained'])
    model_cfg = dict(backbone=backbone, n_last_blocks=1, avgpool=info.get('cls_target') == 'cls_patch_concat',
                     bn_eps=1e-6)
    return model_cfg, info.get('img_size')


def _eval_crop(cfg) -> Optional[int]:
    loader = cfg.get('test_dataloader') or cfg.get('val_dataloader')
    pipeline = ((loader or {}).get('dataset') or {}).get('pipeline') or []
    for t in pipeline:
        if t.get('type') == 'CenterCrop':
            size = t.get('crop_size')
            return int(size if isinstance(size, int) else size[0])
    return None


def check_against_cache(probe: RecipeProbe, identity: dict, blocks: List[int], dim: int) -> RecipeProbe:
    """Binds the probe's feature to the cache's arrays; raises :class:`CacheError` on any mismatch."""
    from internvit_dense.models.backbones.internvit import resolve_arch

    clf, errors = probe.classifier, []
    spec = FeatureSpec.parse(clf.spec)
    want = dim * (spec.n_last + spec.avgpool)
    if clf.weight.shape[0] != want:
        raise CacheError(f'the probe takes {clf.weight.shape[0]}-d features; {clf.spec} of this cache is '
                         f'{want}-d ({dim}-d blocks): it was trained on another backbone')
    try:
        clf.keys = spec.keys(blocks)
    except ValueError as e:
        raise CacheError(f'the probe reads {clf.spec}: {e}') from None
    backbone = (probe.model_cfg or {}).get('backbone')
    if backbone is None:
        probe.unverified.append('the checkpoint carries no config (meta.cfg): backbone, crop and blocks unchecked')
        return probe

    kind = backbone.get('type', 'InternViT')
    cached_encoder = identity.get('encoder')  # None: an InternViT cache
    if kind != 'InternViT' or cached_encoder is not None:
        # Another library's encoder: its name must match; blocks, crop and weights are not compared here.
        name = backbone.get('model_name') if kind == 'TimmEncoder' else None
        if kind == 'TimmEncoder' and (cached_encoder or {}).get('kind') == 'timm' \
                and cached_encoder.get('name') == name:
            probe.verified.append(f'encoder timm:{name}')
            probe.unverified.append('blocks, crop and weights of a timm encoder are not compared with the cache')
            return probe
        raise CacheError(f'the probe was trained on the backbone {kind} ({name or backbone.get("path", "?")}); '
                         f'the cache holds {cached_encoder or "InternViT"} features')

    arch = resolve_arch(backbone.get('arch', '6b'))
    cached_arch = identity.get('arch') or {}
    diff = [f'{k} {arch.get(k)} vs {cached_arch.get(k)}' for k in ARCH_FIELDS
            if k in cached_arch and arch.get(k) != cached_arch.get(k)]
    if diff:
        errors.append('architecture differs (probe vs cache): ' + ', '.join(diff))
    else:
        probe.verified.append('architecture')
    depth = arch['depth']
    wanted_blocks = list(range(depth - spec.n_last, depth))
    if [b for kind, b in clf.keys if kind == 'cls'] != wanted_blocks:
        errors.append(f'the probe reads blocks {wanted_blocks} of {depth}; the cache holds blocks {blocks}')
    else:
        probe.verified.append(f'blocks {wanted_blocks}')
    if probe.crop_size is not None and identity.get('img_size') not in (None, probe.crop_size):
        errors.append(f'the probe was evaluated at {probe.crop_size} px; the cache holds {identity["img_size"]} px '
                      'features')
    elif probe.crop_size is not None:
        probe.verified.append(f'{probe.crop_size} px crop')

    cached_ckpt = identity.get('checkpoint') or {}
    init = backbone.get('init_cfg') or {}
    if probe.backbone_in_checkpoint:
        probe.unverified.append('backbone weights are inside the probe checkpoint; the cache was extracted from '
                                f'{_describe(cached_ckpt)} and the two are not compared')
    elif init.get('type') == 'Pretrained' and init.get('checkpoint'):
        try:  # a Hub name: its cached copy, never a download just to compare
            path = resolve_checkpoint(init['checkpoint'], local_files_only=True)
        except HubCheckpointError:
            path = init['checkpoint']
        if not osp.exists(path):
            probe.unverified.append(f'backbone weights: {path} (the probe\'s pretrained file) is not on this machine')
        elif checkpoint_identity(path) != cached_ckpt:
            errors.append(f'backbone weights: the probe was trained on {path}; the cache was extracted from '
                          f'{_describe(cached_ckpt)}')
        else:
            probe.verified.append(f'backbone weights ({osp.basename(path)})')
    else:
        probe.unverified.append('the probe\'s backbone has no pretrained checkpoint in its config')
    if errors:
        raise CacheError('the recipe checkpoint does not match the feature cache:\n  - ' + '\n  - '.join(errors))
    return probe


def _describe(ckpt_identity: dict) -> str:
    files = ckpt_identity.get('files')
    if files:
        return ', '.join(f[0] for f in files)
    return ckpt_identity.get('kind', 'an unknown checkpoint') + (' backbone' if ckpt_identity.get('kind') else '')
