"""InternVL's released task checkpoints, whole models: segmentation (mmseg 0.30) and the classification head.

``internvl-seg``: the eight ADE20K files of InternVL's ``segmentation/README.md`` (linear probing,
head tuning, full tuning, the five few-shot rows), written by its mmseg 0.30 code. Their names are
mmseg's, ours except for two places where InternVL's modules differ from the mmseg 1.x ones our
configs use to express them exactly:

* the pyramid lives inside InternVL's backbone (``InternViT6B(with_fpn=True)``: ``backbone.up1``
  = ConvTranspose2d, channel LayerNorm (eps 1e-6), GELU, ConvTranspose2d; ``up2`` = ConvTranspose2d;
  ``up3`` identity; ``up4`` max-pool) and is mmseg's ``Feature2Pyramid`` with ``LN2d(eps=1e-6)`` in
  ours: ``backbone.up1.N`` <-> ``neck.upsample_4x.N``, ``backbone.up2.N`` <-> ``neck.upsample_2x.N``;
* the linear head is InternVL's ``FCNHead(num_convs=0, with_norm=True)``, a BatchNorm named
  ``decode_head.norm`` then ``conv_seg``: our ``BNLinearHead``'s ``decode_head.bn``.

Everything else (``backbone.cls_token``, ``backbone.pos_embed``, ``backbone.patch_embed.proj``,
``backbone.blocks.N.*``, UPerHead's and the FCN auxiliary head's convs and BatchNorms) has the same
name and shape. The backbone (pyramid included) is stored in bf16 (InternVL casts it), the heads in
fp32; the position embedding is at the 504 crop's 36x36 grid (1 + 1296 entries). The container is
mmcv's (``state_dict`` + ``meta`` with the training config text, ``CLASSES``, ``PALETTE``), or
DeepSpeed's ``module``.

``internvl-cls``: ``intern_vit_6b_224px_head.pth``, the linear-probe head of InternVL's
``classification/`` code: ``{'model': {norm.*, head.*}, 'config': <yacs CfgNode>, 'epoch', ...}``
(its ``release.py`` keeps only ``norm.``/``head.`` of the model). ``norm`` is
``SyncBatchNorm(6400, eps=1e-6)``, ``head`` is ``Linear(6400, 1000)``, on [cls || mean patch] of the
last block: our ``LinearProbeClassifier(bn_affine=True)``'s ``head.bn`` / ``head.fc``.

A file is recognised by a key only its format has; :func:`describe` says which recipe it holds
(head, blocks read, pyramid, grid, classes), and :func:`mismatches` why it cannot be a given
model's, so that a file of another recipe is refused with the reason instead of failing on key
names (or, worse, loading into a model that reads other blocks).
"""
from __future__ import annotations

import re
from typing import Dict, Iterable, List, Optional

import torch

from .formats import CheckpointFormat, register_format

SEG_CONFIGS = 'configs/segmentation'
CLS_CONFIG = 'configs/classification/internvit_6b_linear_probe_in1k.py'
# InternVL's few-shot rows: 1/N of the images -> k iterations
FEW_SHOT_ITERS = {16: 5, 8: 10, 4: 20, 2: 40, 1: 80}


@register_format
class InternVLSegFormat(CheckpointFormat):
    """InternVL's ADE20K checkpoints (mmseg 0.30): see the module docstring."""

    name = 'internvl-seg'
    task = 'segmentation'
    whole_model = True
    # UperNet files (InternVL's pyramid inside the backbone) or linear ones (FCNHead's 'norm')
    markers = ('backbone.up1.0.weight', 'decode_head.norm.running_mean')
    marker = markers[0]
    # theirs -> ours, as name prefixes; every other name is the same in both
    renames = (('backbone.up1.', 'neck.upsample_4x.'), ('backbone.up2.', 'neck.upsample_2x.'),
               ('decode_head.norm.', 'decode_head.bn.'))
    # with_final_norm=True puts LayerNorms after every pyramid level; Feature2Pyramid has none there
    final_norms = re.compile(r'^backbone\.up1\.4\.|^backbone\.up[234]\.1\.')

    def detect(self, keys: Iterable[str]) -> Optional[str]:
        for key in keys:
            for marker in self.markers:
                if key == marker or key.endswith('.' + marker):
                    return key[:len(key) - len(marker)]
        return None

    def to_ours(self, key: str) -> str:
        for theirs, ours in self.renames:
            if key.startswith(theirs):
                return ours + key[len(theirs):]
        return key

    def from_ours(self, state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        out = {}
        for key, value in state_dict.items():
            for theirs, ours in self.renames:
                if key.startswith(ours):
                    key = theirs + key[len(ours):]
                    break
            out[key] = value
        return out

    def describe(self, state_dict: Dict[str, torch.Tensor], meta: dict) -> dict:
        """What the file holds (under its own names)."""
        blocks = {int(m.group(1)) for k in state_dict for m in [re.match(r'^backbone\.blocks\.(\d+)\.', k)] if m}
        pos = state_dict.get('backbone.pos_embed')
        head = 'linear' if 'decode_head.norm.running_mean' in state_dict else (
            'upernet' if any(k.startswith('decode_head.psp_modules.') for k in state_dict) else 'other')
        seg = state_dict.get('decode_head.conv_seg.weight')
        info = dict(head=head, pyramid='backbone.up1.0.weight' in state_dict,
                    final_norms=sorted(k for k in state_dict if self.final_norms.match(k)),
                    depth=max(blocks) + 1 if blocks else 0,
                    embed_dims=int(pos.shape[-1]) if pos is not None else None,
                    pos_entries=int(pos.shape[1]) if pos is not None and pos.ndim == 3 else None,
                    num_classes=int(seg.shape[0]) if seg is not None else None,
                    auxiliary='auxiliary_head.conv_seg.weight' in state_dict,
                    out_indices=None, frozen=None, name=None)
        info.update(_read_training_config(meta))
        return info

    def suggested_config(self, info: dict) -> str:
        if info['head'] == 'linear':
            frozen = info['frozen'] if info['frozen'] is not None else info['out_indices'] != [47]
            if frozen:
                return f'{SEG_CONFIGS}/internvit_6b_linear_frozen_ade20k_504.py'
            n = _few_shot_denominator(info.get('name') or '')
            row = f'1of{n}_{FEW_SHOT_ITERS[n]}k' if n in FEW_SHOT_ITERS else '1of*_*k'
            return f'{SEG_CONFIGS}/internvit_6b_linear_full_ade20k_504_{row}.py'
        kind = 'full' if info['frozen'] is False else 'frozen'
        return f'{SEG_CONFIGS}/internvit_6b_upernet_{kind}_ade20k_504.py'

    def mismatches(self, info: dict, model) -> List[str]:
        """Why ``model`` (an mmseg EncoderDecoder) cannot be the model this file holds; [] if it can."""
        out = []
        backbone = getattr(model, 'backbone', None)
        if backbone is None or not hasattr(backbone, 'blocks'):
            return [f'the config builds {type(model).__name__} without an InternViT backbone']
        if info['final_norms']:
            out.append(f"the file's pyramid has LayerNorms after its levels (InternVL's with_final_norm=True: "
                       f"{info['final_norms'][:2]}); mmseg's Feature2Pyramid has none there")
        neck = getattr(model, 'neck', None) if getattr(model, 'with_neck', False) else None
        has_pyramid = type(neck).__name__ == 'Feature2Pyramid'
        if info['pyramid'] != has_pyramid:
            out.append('the file has InternVL\'s 4-level pyramid (backbone.up1..up4) and the config none'
                       if info['pyramid'] else
                       f'the config has a {type(neck).__name__} neck and the file no pyramid')
        head = type(getattr(model, 'decode_head', None)).__name__
        want = {'linear': 'BNLinearHead', 'upernet': 'UPerHead'}.get(info['head'])
        if want and head != want:
            out.append(f"the file's decode head is InternVL's {info['head']} head ({want} here) and the "
                       f'config builds {head}')
        if info['depth'] and info['depth'] != backbone.depth:
            out.append(f"the file's backbone has {info['depth']} blocks and the config's {backbone.depth}")
        if info['embed_dims'] and info['embed_dims'] != backbone.embed_dims:
            out.append(f"the file's backbone is {info['embed_dims']} wide and the config's {backbone.embed_dims}")
        if info['pos_entries']:
            ours = backbone.pos_embed.shape[1]
            if ours != info['pos_entries']:
                g = int(round((info['pos_entries'] - 1) ** 0.5))
                out.append(f"the file holds the position embedding at the {g}x{g} grid ({info['pos_entries']} "
                           f"entries) and the config's backbone at {backbone.pretrain_grid[0]}x"
                           f"{backbone.pretrain_grid[1]} ({ours}); set the backbone's pretrain_size="
                           f'{g * backbone.patch_size} (loading never resamples a trained embedding)')
        if info['out_indices'] is not None and list(info['out_indices']) != list(backbone.out_indices):
            out.append(f"the file was trained on blocks {info['out_indices']} and the config reads blocks "
                       f'{list(backbone.out_indices)}')
        classes = getattr(getattr(model, 'decode_head', None), 'num_classes', None)
        if info['num_classes'] and classes and info['num_classes'] != classes:
            out.append(f"the file classifies {info['num_classes']} classes and the config {classes}")
        if info['auxiliary'] != bool(getattr(model, 'with_auxiliary_head', False)):
            out.append('the file has an auxiliary head and the config none' if info['auxiliary'] else
                       'the config has an auxiliary head and the file none')
        return out

    def dataset_meta(self, meta: dict) -> Optional[dict]:
        if meta.get('CLASSES'):
            out = dict(classes=tuple(meta['CLASSES']))
            if meta.get('PALETTE'):
                out['palette'] = [list(p) for p in meta['PALETTE']]
            return out
        return None


@register_format
class InternVLClsFormat(CheckpointFormat):
    """InternVL's linear-probe classification head (``intern_vit_6b_224px_head.pth``): see the module docstring."""

    name = 'internvl-cls'
    task = 'classification'
    whole_model = True
    marker = 'norm.running_mean'  # with 'head.weight' and no backbone: see detect
    names = {'norm.weight': 'head.bn.weight', 'norm.bias': 'head.bn.bias', 'norm.running_mean': 'head.bn.running_mean',
             'norm.running_var': 'head.bn.running_var', 'norm.num_batches_tracked': 'head.bn.num_batches_tracked',
             'head.weight': 'head.fc.weight', 'head.bias': 'head.fc.bias'}

    def detect(self, keys: Iterable[str]) -> Optional[str]:
        keys = set(keys)
        # the head alone: InternVL's BatchNorm 'norm' and Linear 'head', no backbone, none of our names
        if {'norm.running_mean', 'head.weight'} <= keys and not any(k.startswith(('blocks.', 'head.fc.'))
                                                                     for k in keys):
            return ''
        return None

    def to_ours(self, key: str) -> str:
        return self.names.get(key, key)

    def from_ours(self, state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        back = {ours: theirs for theirs, ours in self.names.items()}
        return {back.get(k, k): v for k, v in state_dict.items() if not k.startswith('backbone.')}

    def describe(self, state_dict: Dict[str, torch.Tensor], meta: dict) -> dict:
        w = state_dict.get('head.weight')
        cfg = meta.get('config') if isinstance(meta.get('config'), dict) else {}
        model_cfg = _get(cfg, 'MODEL') or {}
        vit = _get(model_cfg, 'INTERN_VIT_6B') or {}
        return dict(in_dims=int(w.shape[1]) if w is not None else None,
                    num_classes=int(w.shape[0]) if w is not None else None,
                    affine='norm.weight' in state_dict,
                    img_size=_get(_get(cfg, 'DATA') or {}, 'IMG_SIZE'),
                    depth=_get(vit, 'DEPTH'), embed_dims=_get(vit, 'EMBED_DIM'), num_heads=_get(vit, 'NUM_HEADS'),
                    mlp_ratio=_get(vit, 'MLP_RATIO'), qk_normalization=_get(vit, 'QK_NORMALIZATION'),
                    qkv_bias=_get(vit, 'QKV_BIAS'),
                    cls_target=_get(vit, 'CLS_TARGET'), pretrained=_get(vit, 'PRETRAINED'))

    def suggested_config(self, info: dict) -> str:
        return CLS_CONFIG

    def mismatches(self, info: dict, model) -> List[str]:
        out = []
        head = getattr(model, 'head', None)
        bn, fc = getattr(head, 'bn', None), getattr(head, 'fc', None)
        if bn is None or fc is None:
            return [f'the config builds {type(model).__name__}, not a LinearProbeClassifier']
        if info['affine'] != bool(bn.affine):
            out.append("the file's BatchNorm has a scale and shift (InternVL's head) and the config's none: set "
                       'bn_affine=True' if info['affine'] else "the config's BatchNorm is affine and the file's not")
        if info['in_dims'] and info['in_dims'] != fc.in_features:
            out.append(f"the file's head takes {info['in_dims']}-d features and the config's "
                       f'{fc.in_features}-d')
        if info['num_classes'] and info['num_classes'] != fc.out_features:
            out.append(f"the file classifies {info['num_classes']} classes and the config {fc.out_features}")
        if info['cls_target'] not in (None, 'cls_patch_concat'):
            out.append(f"the file's head reads InternVL's {info['cls_target']!r} feature; ours reads "
                       '[cls || mean patch] (cls_patch_concat)')
        elif getattr(model, 'avgpool', True) is not True or len(getattr(model, 'blocks', [0])) != 1:
            out.append("the file's head reads [cls || mean patch] of the last block; the config reads "
                       f'{len(model.blocks)} blocks, avgpool={model.avgpool}')
        backbone = getattr(model, 'backbone', None)
        if info['depth'] and backbone is not None and info['depth'] != backbone.depth:
            out.append(f"the file's head was trained on a {info['depth']}-block backbone and the config's has "
                       f'{backbone.depth}')
        return out

    def dataset_meta(self, meta: dict) -> Optional[dict]:
        return None


def detect_task_format(keys: Iterable[str]):
    """(format, prefix) of an InternVL task checkpoint in :data:`~.formats.FORMATS`, or (None, None) for any
    other state dict (ours)."""
    from .formats import FORMATS, detect_format
    try:
        name, prefix = detect_format(keys, whole_model=True)
    except ValueError:
        return None, None
    return FORMATS[name], prefix


# ------------------------------------------------------------------ helpers
def _get(obj, key):
    if isinstance(obj, dict):
        return obj.get(key)
    return getattr(obj, key, None)


def _few_shot_denominator(name: str) -> Optional[int]:
    m = re.search(r'_1of(\d+)', name)
    return int(m.group(1)) if m else None


def _read_training_config(meta: dict) -> dict:
    """out_indices / frozen / config name from the mmcv config text an mmseg 0.30 checkpoint carries."""
    text = meta.get('config') if isinstance(meta, dict) else None
    out = {}
    if isinstance(meta, dict) and isinstance(meta.get('exp_name'), str):
        out['name'] = meta['exp_name']
    if not isinstance(text, str):
        return out
    backbone = None
    try:
        from mmengine.config import Config
        backbone = Config.fromstring(text, '.py').model.backbone
    except Exception:  # a config mmengine cannot parse: the two settings are read from its text instead
        pass
    if backbone is not None:
        if backbone.get('out_indices') is not None:
            out['out_indices'] = [int(i) for i in backbone['out_indices']]
        if backbone.get('freeze_vit') is not None:
            out['frozen'] = bool(backbone['freeze_vit'])
        return out
    m = re.search(r'out_indices\s*=\s*\[([\d,\s]*)\]', text)
    if m:
        out['out_indices'] = [int(v) for v in m.group(1).split(',') if v.strip()]
    m = re.search(r'freeze_vit\s*=\s*(True|False)', text)
    if m:
        out['frozen'] = m.group(1) == 'True'
    return out
