"""A trained model from a config and a checkpoint, for inference in Python (and tools/infer.py)::

    from internvit_dense.apis import init_model
    from mmseg.apis import inference_model           # mmdet.apis.inference_detector for detection configs
    model = init_model('configs/segmentation/...py', 'work_dirs/.../iter_80000.pth', device='cuda:0')
    result = inference_model(model, 'image.jpg')      # SegDataSample: result.pred_sem_seg

It is mmseg's ``init_model`` / mmdet's ``init_detector`` (the config's ``default_scope`` picks which)
with three differences. The model is built with its InternViT on the meta device and filled from the
memory-mapped checkpoint in the config's dtype (``backbone=dict(dtype='bfloat16')``): the backbone is
never randomly initialised and never held twice, so a 6B model loads in its own size of host memory
(:func:`build_trained`, which tools/test.py uses too). The checkpoint is loaded strictly, so one that
does not fit the config fails instead of leaving random weights. And it loads the checkpoints our
training writes on torch >= 2.6, whose ``weights_only`` default refuses the objects mmengine stores
beside the weights: the file is one the caller names, trusted as tools/test.py trusts it. InternVL's
released task checkpoints load as they are too, into the config of their recipe (a file of another
recipe is refused with the reason and the config to use).
"""
import os
import os.path as osp
import warnings
from typing import Optional, Tuple, Union

import torch
from mmengine.config import Config
from mmengine.registry import MODELS

from internvit_dense.checkpoint import CheckpointError, fill_module, meta_tensors, resolve_checkpoint
from internvit_dense.checkpoint.model_checkpoints import check_fits, log_loaded, read_model_checkpoint


def init_model(config: Union[str, os.PathLike, Config], checkpoint: Optional[Union[str, os.PathLike]] = None,
               device: str = 'cpu', cfg_options: Optional[dict] = None) -> torch.nn.Module:
    """The config's model in eval mode on ``device``, with ``checkpoint``'s weights if given.

    ``model.dataset_meta`` (class names and palette, for drawing) comes from the checkpoint, else
    from the config's test data set.
    """
    if isinstance(config, (str, os.PathLike)):
        if not osp.isfile(config):
            raise FileNotFoundError(f'config file not found: {config}')
        config = Config.fromfile(str(config))
    if cfg_options:
        config.merge_from_dict(cfg_options)
    if config.get('test_pipeline'):
        # mmseg's inference_model drops LoadAnnotations from the test pipeline, but not a depth config's
        # LoadDepthAnnotation, which would look for a ground-truth file beside the user's image
        config.test_pipeline = [t for t in config.test_pipeline if t.get('type') != 'LoadDepthAnnotation']
    scope = config.get('default_scope')
    if scope not in ('mmseg', 'mmdet'):
        raise ValueError(f"init_model builds segmentation (default_scope='mmseg') and detection ('mmdet') models; "
                         f'this config has default_scope={scope!r} (linear probing: tools/test.py, '
                         'tools/linear_probe.py)')
    if checkpoint is None:
        if scope == 'mmdet':
            from mmdet.apis import init_detector
            with warnings.catch_warnings():  # 'checkpoint is None, use COCO classes': the classes are set below
                warnings.filterwarnings('ignore', message='checkpoint is None')
                model = init_detector(config, checkpoint=None, device='cpu')
        else:
            from mmseg.apis import init_model as init_segmentor
            model = init_segmentor(config, checkpoint=None, device='cpu')
        model.dataset_meta = _test_set_metainfo(config)
        return model.to(device).eval()

    # what mmseg's init_model / mmdet's init_detector do around the build
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import init_default_scope
    init_default_scope(scope)
    if scope == 'mmseg':
        config.model.train_cfg = None
    model, state = build_trained(config.model, checkpoint)
    if device == 'cpu':
        model = revert_sync_batchnorm(model)
    model.cfg = config
    meta = (state.get('meta') or {}).get('dataset_meta')
    model.dataset_meta = dict(meta) if meta else _test_set_metainfo(config)
    return model.to(device).eval()


def build_trained(model_cfg: dict, checkpoint: Union[str, os.PathLike]) -> Tuple[torch.nn.Module, dict]:
    """The model of ``model_cfg`` filled from a training checkpoint (``iter_N.pth``: head + backbone, or a
    consolidated state dict), and the checkpoint's other entries (``meta`` ...).

    Every InternViT is built on the meta device (no random init, no memory) and takes the file's
    tensors themselves where the dtype matches, else a per-tensor cast to the config's dtype; the
    rest of the model (heads: small) is built as usual and copied into. Keys are checked strictly,
    and a clear error names what does not fit. A backbone the checkpoint does not hold (head-only
    linear-probe checkpoints) is filled from its own ``init_cfg`` checkpoint.
    """
    from internvit_dense.models.backbones.internvit import InternViT, backbones_on_meta
    from internvit_dense.models.backbones.lora import needs_base_weights

    checkpoint = resolve_checkpoint(checkpoint)  # a local path wins; else a Hub name's cached copy
    _check_path(checkpoint)
    # ours, or one of InternVL's released task checkpoints under our key names
    ckpt = read_model_checkpoint(checkpoint)
    if ckpt['source_format'] is None:
        state = ckpt['raw']
        sd = state['state_dict'] if isinstance(state.get('state_dict'), dict) else state
    else:
        state, sd = dict(meta=ckpt['meta']), ckpt['state_dict']
    # as mmengine's loader: a DDP/DeepSpeed-wrapped model's keys start with 'module.'
    sd = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in sd.items()}
    with backbones_on_meta():
        model = MODELS.build(model_cfg)
    check_fits(ckpt, model, checkpoint)  # an InternVL file of another recipe: refused with the reason
    log_loaded(ckpt, checkpoint)
    del ckpt  # the tensors now live in sd only: the model takes them from there
    fill_module(model, sd, strict=True, source=checkpoint, allow_meta=True)
    for m in model.modules():
        init_cfg = getattr(m, 'init_cfg', None)  # a dict, or a list (mmdet's modules), or None
        pretrained = isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained'
        if isinstance(m, InternViT) and m.pos_embed.is_meta and pretrained:
            m.init_weights()  # a head-only checkpoint: the frozen backbone comes from its pretrained file
        elif pretrained and needs_base_weights(m):
            m.init_weights()  # a LoRA checkpoint holds the adapters: the base weights come from the pretrained file
    left = meta_tensors(model)
    if left:
        raise CheckpointError(f'{checkpoint} does not hold {len(left)} tensors of the model, e.g. {left[:6]}')
    # a NaN/Inf weight scores as a low mIoU, not as an error: refused, as training refuses to save one
    from internvit_dense.engine.hooks import non_finite_tensors
    bad = non_finite_tensors(model)
    if bad:
        shown = ', '.join(bad[:5]) + (f' and {len(bad) - 5} more' if len(bad) > 5 else '')
        raise NonFiniteWeightsError(f'checkpoint {checkpoint} holds NaN/Inf in {len(bad)} tensors ({shown}): its '
                                    'predictions would be meaningless. Use an earlier checkpoint of the run (training '
                                    'never saves a non-finite model; this file was written or changed elsewhere)')
    state.pop('state_dict', None)
    return model, state


class NonFiniteWeightsError(CheckpointError):
    """A checkpoint whose weights hold a NaN or Inf: the message names the tensors."""


TRAINED_MODEL = 'TrainedModel'


@MODELS.register_module(name=TRAINED_MODEL, force=True)
def _trained_model(model: dict, checkpoint: str, data_preprocessor: Optional[dict] = None) -> torch.nn.Module:
    """``model=dict(type='TrainedModel', model=<the config's model>, checkpoint=...)``: what tools/test.py
    hands mmengine's Runner, so that the Runner builds the model straight from the checkpoint."""
    if data_preprocessor is not None:  # the Runner passes the config's top-level one on, as for any model
        model = dict(model)
        model.setdefault('data_preprocessor', data_preprocessor)
    return build_trained(model, checkpoint)[0]


def _check_path(path: str) -> None:
    if osp.isdir(path):
        raise IsADirectoryError(f'{path} is a folder (a DeepSpeed checkpoint?): make one file of it first with '
                                f'python tools/zero_to_fp32.py {path}')
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {path}')


def _test_set_metainfo(config: Config) -> dict:
    from mmengine.registry import DATASETS
    dataset = dict(config.test_dataloader.dataset, lazy_init=True)  # names only: no file is read
    return dict(DATASETS.build(dataset).metainfo)
