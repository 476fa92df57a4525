"""Vision encoders of other libraries behind InternViT's backbone interface.

``TimmEncoder`` runs a timm vision transformer (ViT, DINOv2, EVA-02, SigLIP, CLIP ViTs,
``vit_intern300m_patch14_448`` ...) through timm's own ``forward_intermediates``;
``HFEncoder`` runs a Hugging Face vision model through transformers (``AutoModel`` with
``output_hidden_states``). Both load weights from local files only, so that the linear
probe, segmentation and detection configs compare encoders under one protocol.

The semantics are InternViT's:

* ``out_indices`` (negative counts from the end) select the blocks whose patch tokens
  :meth:`forward` returns as (B, C, h, w) maps, for mmseg/mmdet necks and heads;
* :meth:`get_intermediate_layers` is DINOv2's (``n`` last blocks or a list of blocks,
  ``reshape``, ``return_class_token``), which the linear probe reads;
* ``frozen=True``: no gradients, no autograd graph, always in eval mode.

Inputs are what every config and the probe's extraction feed InternViT: images
normalised with the ImageNet mean and std. Each encoder gets them re-normalised to the
mean and std it was trained with (CLIP's, SigLIP's 0.5 ...), so a comparison does not
handicap an encoder with another's preprocessing. ``norm=True`` (default) puts every
block's output through the encoder's final norm, as DINOv2's evaluations do; encoders
without one (InternViT, ``vit_intern300m``) are unaffected. Encoders without a class
token (SigLIP) give the mean patch token where a class token is asked for.
"""
from __future__ import annotations

import contextlib
import inspect
import json
import os
import os.path as osp
import re
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.model import BaseModule

from ..registry import DET_MODELS, ENGINE_MODELS, SEG_MODELS

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # what the configs' data preprocessors normalise with (0..1 scale)
IMAGENET_STD = (0.229, 0.224, 0.225)

Tokens = List[Tuple[torch.Tensor, Optional[torch.Tensor]]]  # per block: (patch tokens (B, h*w, C), cls (B, C))


class EncoderLoadError(RuntimeError):
    """Weights that cannot be loaded without the network, or that do not fit the encoder."""


class LibraryEncoder(BaseModule):
    """Shared interface; subclasses build the wrapped model and implement :meth:`_block_tokens`."""

    depth: int
    embed_dims: int
    patch_size: int

    def __init__(self, out_indices: Sequence[int] = (-1,), frozen: bool = False, norm: bool = True,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        self._out_indices = tuple(out_indices)
        self.frozen = frozen
        self.norm = norm

    def _finish_setup(self, model: nn.Module, depth: int, embed_dims: int, patch_size: int,
                      mean: Sequence[float], std: Sequence[float]) -> None:
        self.depth, self.embed_dims, self.patch_size = int(depth), int(embed_dims), int(patch_size)
        self.out_indices = self._normalise_indices(self._out_indices)
        # x_encoder = (x_imagenet * std_in + mean_in - mean_enc) / std_enc = x_imagenet * scale + shift
        scale = torch.tensor(IMAGENET_STD) / torch.tensor(std, dtype=torch.float32)
        shift = (torch.tensor(IMAGENET_MEAN) - torch.tensor(mean, dtype=torch.float32)) / torch.tensor(std)
        self.register_buffer('input_scale', scale.view(1, 3, 1, 1), persistent=False)
        self.register_buffer('input_shift', shift.view(1, 3, 1, 1), persistent=False)
        self.encoder_mean, self.encoder_std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
        if self.frozen:
            self.requires_grad_(False)
            self.eval()

    def _attach_lora(self, lora: Optional[dict], layers_pattern: str, adapters_only: bool) -> None:
        """``lora=dict(...)``: peft LoRA adapters in the wrapped model, as InternViT's (:mod:`.lora`)."""
        self.lora = None
        if not lora:
            return
        if self.frozen:
            raise ValueError(f'{self.describe()}: frozen=True trains nothing in the encoder and lora=... trains its '
                             'adapters: set frozen=False with lora (the base weights stay frozen)')
        from .lora import attach_lora
        self.lora = attach_lora(self.model, lora, self.depth, adapters_only, layers_pattern, owner=self)

    def _normalise_indices(self, indices: Sequence[int]) -> List[int]:
        out = []
        for i in indices:
            if not -self.depth <= i < self.depth:
                raise IndexError(f'out index {i} is outside the {self.depth} blocks of {self.describe()}')
            out.append(i % self.depth)
        return out

    def describe(self) -> str:
        raise NotImplementedError

    def identity(self) -> dict:
        """What the linear probe's feature cache records about this encoder (besides the weights)."""
        raise NotImplementedError

    EMBEDDING_NAMES = ('cls_token', 'reg_token', 'pos_embed', 'patch_embed', 'mask_token', 'embeddings')

    def get_layer_depth(self, param_name: str, prefix: str = '') -> Tuple[int, int]:
        """(layer depth, number of layers) of a parameter, for layer-wise lr decay, as InternViT's:
        embeddings are layer 0, block ``i`` is ``i + 1`` (timm's ``blocks.i``, transformers' ``layer(s).i``),
        anything else (final norm, neck, heads) the last, ``depth + 1``, of ``depth + 2``."""
        num_layers = self.depth + 2
        if not param_name.startswith(prefix):
            return num_layers - 1, num_layers
        name = param_name[len(prefix):]
        block = re.search(r'(?:^|\.)(?:blocks|layers?)\.(\d+)\.', name)
        if block:
            return int(block.group(1)) + 1, num_layers
        if any(part in name.split('.') for part in self.EMBEDDING_NAMES):
            return 0, num_layers
        return num_layers - 1, num_layers

    # ----------------------------------------------------------------- modes
    def train(self, mode: bool = True):
        return super().train(mode and not self.frozen)

    def _grad_context(self):
        return torch.no_grad() if self.frozen else contextlib.nullcontext()

    def _renormalise(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() * self.input_scale.to(x.device) + self.input_shift.to(x.device)
        return x.to(self.param_dtype)

    @property
    def param_dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    # --------------------------------------------------------------- forward
    def _block_tokens(self, x: torch.Tensor, indices: List[int]) -> Tuple[Tokens, Tuple[int, int]]:
        """For each of ``indices`` (ascending, unique): (patch tokens, cls token or None); and the grid."""
        raise NotImplementedError

    def get_intermediate_layers(self, x: torch.Tensor, n: Union[int, Sequence[int]] = 1, reshape: bool = False,
                                return_class_token: bool = False) -> Tuple:
        """Outputs of the last ``n`` blocks (or of the blocks listed in ``n``), as InternViT's."""
        if x.ndim != 4:
            raise ValueError(f'{self.describe()} expects images of shape (B, C, H, W), got {tuple(x.shape)}')
        indices = list(range(self.depth - n, self.depth)) if isinstance(n, int) else self._normalise_indices(n)
        wanted = sorted(set(indices))
        with self._grad_context():
            tokens, (h, w) = self._block_tokens(self._renormalise(x), wanted)
        by_index = dict(zip(wanted, tokens))
        outputs = []
        for i in indices:
            patches, cls_tok = by_index[i]
            if cls_tok is None:  # no class token in this encoder: its mean patch token stands in
                cls_tok = patches.mean(dim=1)
            if reshape:
                patches = patches.transpose(1, 2).reshape(patches.shape[0], -1, h, w)
            outputs.append((patches, cls_tok) if return_class_token else patches)
        return tuple(outputs)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Feature maps (B, C, h, w) of the ``out_indices`` blocks."""
        return self.get_intermediate_layers(x, self.out_indices, reshape=True)


def _default_device_is_meta() -> bool:
    return torch.empty(0).device.type == 'meta'


# Other libraries' encoders behind InternViT's interface, for comparisons under the same heads.
@ENGINE_MODELS.register_module()
@SEG_MODELS.register_module()
@DET_MODELS.register_module()
class TimmEncoder(LibraryEncoder):
    """A timm vision transformer, run through its ``forward_intermediates``.

    Args:
        model_name: a timm architecture, e.g. ``'vit_large_patch14_dinov2'``,
            ``'vit_intern300m_patch14_448'``, ``'eva02_large_patch14_224'``; a pretrained tag
            (``.lvd142m``) picks the tag's preprocessing (mean/std, native size).
        checkpoint: local weights (``.safetensors``, ``.pth``, ``.bin``) in timm's layout or any
            original layout the architecture's ``checkpoint_filter_fn`` converts (DINOv2's,
            OpenAI CLIP's ...). Loaded by :meth:`init_weights`; shorthand for
            ``init_cfg=dict(type='Pretrained', checkpoint=...)``. None: random weights.
        img_size: the grid the position embedding is held at (default: the architecture's
            native size); every input size works (``dynamic_img_size``), interpolated from it.
        out_indices / frozen / norm: see the module docstring.
        with_cp: timm's gradient checkpointing of the blocks.
        drop_path_rate: stochastic depth when fine-tuning.
        model_kwargs: more keyword arguments for ``timm.create_model`` (e.g. tiny widths in tests).
        lora: peft LoRA adapters on the blocks' linears (timm ViTs name them ``attn.qkv``, ``attn.proj``,
            ``mlp.fc1``, ``mlp.fc2``, as InternViT), with ``frozen=False``: see :mod:`.lora`.
    """

    def __init__(self, model_name: str, checkpoint: Optional[str] = None, img_size: Optional[int] = None,
                 out_indices: Sequence[int] = (-1,), frozen: bool = False, norm: bool = True, with_cp: bool = False,
                 drop_path_rate: float = 0.0, model_kwargs: Optional[dict] = None, lora: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        import timm

        if checkpoint is not None:
            if init_cfg is not None:
                raise ValueError('give the weights as checkpoint= or as init_cfg, not both')
            init_cfg = dict(type='Pretrained', checkpoint=checkpoint)
        super().__init__(out_indices, frozen, norm, init_cfg)
        self.model_name = model_name
        kwargs = dict(num_classes=0, dynamic_img_size=True, drop_path_rate=drop_path_rate, **(model_kwargs or {}))
        if img_size is not None:
            kwargs['img_size'] = img_size
        self.model_kwargs = dict(model_kwargs or {})
        try:
            # pretrained=False: timm never reaches for the hub here; weights come from a local file in init_weights.
            self.model = timm.create_model(model_name, pretrained=False, **kwargs)
        except RuntimeError as e:
            if 'Unknown model' in str(e):
                raise KeyError(f'{model_name!r} is not a timm model (timm.list_models() lists them)') from None
            raise
        if not hasattr(self.model, 'forward_intermediates'):
            raise TypeError(f'timm model {model_name!r} has no forward_intermediates (timm >= 1.0 ViTs have it)')
        if with_cp:
            self.model.set_grad_checkpointing(True)
        cfg = getattr(self.model, 'pretrained_cfg', None) or {}
        patch = self.model.patch_embed.patch_size
        self._finish_setup(self.model, len(self.model.blocks), self.model.embed_dim,
                           patch[0] if isinstance(patch, (tuple, list)) else patch,
                           cfg.get('mean', IMAGENET_MEAN), cfg.get('std', IMAGENET_STD))
        self.has_class_token = getattr(self.model, 'cls_token', None) is not None
        self._attach_lora(lora, 'blocks', adapters_only=(init_cfg or {}).get('type') == 'Pretrained')

    def describe(self) -> str:
        return f'timm:{self.model_name}'

    def identity(self) -> dict:
        return dict(kind='timm', name=self.model_name, model_kwargs=self.model_kwargs,
                    img_size=list(self.model.patch_embed.img_size or []), norm=self.norm,
                    mean=list(self.encoder_mean), std=list(self.encoder_std))

    def init_weights(self):
        """Loads ``init_cfg``'s checkpoint through timm; never re-initialises the wrapped model randomly
        (mmengine would otherwise call timm's own ``init_weights`` over loaded weights)."""
        if not (self.init_cfg and self.init_cfg.get('type') == 'Pretrained'):
            self._is_init = True
            return
        load_timm_checkpoint(self.model, self.init_cfg['checkpoint'], self.describe())
        if self.frozen:
            self.requires_grad_(False)
        if self.lora is not None:
            self.lora.base_loaded(self.init_cfg['checkpoint'])  # recorded in checkpoints; checks loaded adapters
        self._is_init = True

    def _block_tokens(self, x, indices):
        feats = self.model.forward_intermediates(x, indices=indices, return_prefix_tokens=True, norm=self.norm,
                                                 stop_early=True, output_fmt='NCHW', intermediates_only=True)
        out = []
        for f in feats:
            spatial, prefix = f if isinstance(f, tuple) else (f, None)
            cls_tok = prefix[:, 0] if (self.has_class_token and prefix is not None) else None
            out.append((spatial.flatten(2).transpose(1, 2), cls_tok))
        h, w = feats[0][0].shape[-2:] if isinstance(feats[0], tuple) else feats[0].shape[-2:]
        return out, (h, w)


def load_timm_checkpoint(model: nn.Module, path: str, what: str) -> None:
    """timm's loader and the architecture's own converter (``checkpoint_filter_fn``: original DINOv2 /
    CLIP layouts, position embeddings resized to the model's grid), then a strict load minus the classifier."""
    import sys

    from timm.models import load_checkpoint

    if not osp.isfile(path):
        raise FileNotFoundError(f'{what}: checkpoint {path} is not a file (weights are read from local files '
                                'only; save them first, e.g. with timm on a machine with network access)')
    arch_filter = getattr(sys.modules[type(model).__module__], 'checkpoint_filter_fn', None)
    classifier = (getattr(model, 'pretrained_cfg', None) or {}).get('classifier') or 'head'
    classifiers = (classifier,) if isinstance(classifier, str) else tuple(classifier)

    adapted = any('.lora_' in n for n, _ in model.named_parameters())
    if adapted:  # peft LoRA layers: a target's weight lives in its base_layer; the adapters are not in the file
        from .lora import base_name, is_adapter_name
        paths = {base_name(n): n for n, _ in model.named_parameters() if not is_adapter_name(n)}

    def filter_fn(state_dict, m):
        if arch_filter is not None:
            state_dict = arch_filter(state_dict, m)
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith(tuple(c + '.' for c in classifiers))}
        return {paths.get(k, k): v for k, v in state_dict.items()} if adapted else state_dict

    try:
        if not adapted:
            load_checkpoint(model, path, filter_fn=filter_fn, strict=True)
            return
        result = load_checkpoint(model, path, filter_fn=filter_fn, strict=False)
        missing = [k for k in result.missing_keys if '.lora_' not in k]
        if missing or result.unexpected_keys:
            raise RuntimeError(f'missing keys {missing[:8]}, unexpected keys {result.unexpected_keys[:8]}')
    except RuntimeError as e:
        raise EncoderLoadError(f'{what}: {path} does not fit the architecture:\n{e}') from None


@ENGINE_MODELS.register_module()
@SEG_MODELS.register_module()
@DET_MODELS.register_module()
class HFEncoder(LibraryEncoder):
    """A Hugging Face vision model (DINOv2, DINOv3, SigLIP/SigLIP2, CLIP ...) run through transformers.

    Args:
        path: a local folder as ``save_pretrained`` writes it (``config.json`` + weights, and
            ``preprocessor_config.json`` for the mean/std). Whole image-text models (CLIP,
            SigLIP) give their ``vision_model``. A hub name is refused with the command that
            downloads it: nothing is fetched here.
        out_indices / frozen / norm: see the module docstring.
        lora: peft LoRA adapters (with ``frozen=False``, see :mod:`.lora`) on the linears that ``targets`` name
            inside the blocks of ``encoder.layer(s)`` (e.g. DINOv2's ``attention.q_proj``, ``attention.v_proj``,
            ``mlp.fc1``, ``mlp.fc2`` in transformers 5); the base weights are the folder's, loaded at construction.
    """

    FINAL_NORMS = ('layernorm', 'norm', 'post_layernorm')  # DINOv2 / DINOv3 / SigLIP and CLIP

    def __init__(self, path: str, out_indices: Sequence[int] = (-1,), frozen: bool = False, norm: bool = True,
                 lora: Optional[dict] = None, init_cfg: Optional[dict] = None):
        from transformers import AutoConfig, AutoModel

        super().__init__(out_indices, frozen, norm, init_cfg)
        if not osp.isfile(osp.join(path, 'config.json')):
            raise FileNotFoundError(
                f'hf:{path} is not a local model folder (no config.json). Nothing is downloaded here: fetch it on '
                f'a machine with network access, e.g. `huggingface-cli download {path} --local-dir DIR`, and pass '
                'hf:DIR')
        self.path = path
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        if _default_device_is_meta():  # building on the meta device (config checks): no weights
            model = AutoModel.from_config(config)
        else:
            model = AutoModel.from_pretrained(path, local_files_only=True)
        self.model = getattr(model, 'vision_model', model)  # CLIP / SigLIP image-text models: the image tower
        vcfg = getattr(config, 'vision_config', None) or config
        self.model_type = getattr(vcfg, 'model_type', type(self.model).__name__)
        self.final_norm = next((getattr(self.model, n) for n in self.FINAL_NORMS
                                if isinstance(getattr(self.model, n, None), nn.Module)), None)
        patch = vcfg.patch_size
        mean, std = _hf_mean_std(path)
        self._finish_setup(self.model, vcfg.num_hidden_layers, vcfg.hidden_size,
                           patch[0] if isinstance(patch, (tuple, list)) else patch, mean, std)
        params = inspect.signature(self.model.forward).parameters
        self._forward_kwargs = dict(output_hidden_states=True)
        if 'interpolate_pos_encoding' in params:  # SigLIP/CLIP only interpolate when asked
            self._forward_kwargs['interpolate_pos_encoding'] = True
        # transformers' encoders hold their blocks as encoder.layer (DINOv2, ViT) or encoder.layers (CLIP, SigLIP)
        layers = 'layers' if any('.layers.' in f'.{n}' for n, _ in self.model.named_modules()) else 'layer'
        self._attach_lora(lora, layers, adapters_only=True)
        if self.lora is not None and not _default_device_is_meta():
            self.lora.base_loaded(path)

    def describe(self) -> str:
        return f'hf:{self.path}'

    def identity(self) -> dict:
        return dict(kind='hf', model_type=self.model_type, norm=self.norm, mean=list(self.encoder_mean),
                    std=list(self.encoder_std))

    def init_weights(self):
        self._is_init = True  # weights are loaded at construction; never re-initialised

    def _block_tokens(self, x, indices):
        out = self.model(pixel_values=x, **self._forward_kwargs)
        hidden = out.hidden_states  # the embeddings, then each block's output
        h, w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        n_prefix = hidden[0].shape[1] - h * w
        if n_prefix < 0:
            raise RuntimeError(f'{self.describe()}: {hidden[0].shape[1]} tokens for a {h}x{w} grid')
        has_cls = n_prefix > 0  # cls first, then registers (DINOv2-reg, DINOv3); SigLIP has neither
        tokens = []
        for i in indices:
            t = hidden[i + 1]
            if self.norm and self.final_norm is not None:
                t = self.final_norm(t)
            tokens.append((t[:, n_prefix:], t[:, 0] if has_cls else None))
        return tokens, (h, w)


def _hf_mean_std(path: str) -> Tuple[Sequence[float], Sequence[float]]:
    pre = osp.join(path, 'preprocessor_config.json')
    if os.path.isfile(pre):
        with open(pre) as f:
            cfg = json.load(f)
        if 'image_mean' in cfg and 'image_std' in cfg:
            return cfg['image_mean'], cfg['image_std']
    return IMAGENET_MEAN, IMAGENET_STD


def parse_encoder(spec: str) -> Tuple[str, str]:
    """``'internvit'``, ``'timm:NAME'`` or ``'hf:DIR'`` -> (kind, name)."""
    kind, sep, name = spec.partition(':')
    if spec == 'internvit':
        return 'internvit', ''
    if not sep or kind not in ('timm', 'hf') or not name:
        raise ValueError(f"encoder must be 'internvit', 'timm:NAME' or 'hf:DIR', got {spec!r}")
    return kind, name
