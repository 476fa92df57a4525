"""A trained model from a config and a checkpoint, for inference in Python (and tools/infer.py)::

    from internvit_dense.apis import init_model
    from mmseg.apis import inference_model           # mmdet.apis.inference_detector for detection configs
    model = init_model('configs/segmentation/...py', 'work_dirs/.../iter_80000.pth', device='cuda:0')
    result = inference_model(model, 'image.jpg')      # SegDataSample: result.pred_sem_seg

It is mmseg's ``init_model`` / mmdet's ``init_detector`` (the config's ``default_scope`` picks which)
with two differences. The checkpoint is loaded strictly, so one that does not fit the config fails
instead of leaving random weights. And it loads the checkpoints our training writes on torch >= 2.6,
whose ``weights_only`` default refuses the objects mmengine stores beside the weights: the file is
one the caller names, trusted as tools/test.py trusts it.
"""
import os
import os.path as osp
import warnings
from typing import Optional, Union

import torch
from mmengine.config import Config
# the step of mmengine.runner.load_checkpoint after reading the file: state_dict key, module. prefix, load
from mmengine.runner.checkpoint import _load_checkpoint_to_model


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
    scope = config.get('default_scope')
    if scope not in ('mmseg', 'mmdet'):
        raise ValueError(f"init_model builds segmentation (default_scope='mmseg') and detection ('mmdet') models; "
                         f'this config has default_scope={scope!r} (linear probing: tools/test.py, '
                         'tools/linear_probe.py)')
    state = _read_checkpoint(checkpoint) if checkpoint is not None else None

    if scope == 'mmdet':
        from mmdet.apis import init_detector
        with warnings.catch_warnings():  # 'checkpoint is None, use COCO classes': the classes are set below
            warnings.filterwarnings('ignore', message='checkpoint is None')
            model = init_detector(config, checkpoint=None, device='cpu')
    else:
        from mmseg.apis import init_model as init_segmentor
        model = init_segmentor(config, checkpoint=None, device='cpu')

    meta = None
    if state is not None:
        try:
            _load_checkpoint_to_model(model, state, strict=True)
        except RuntimeError as e:
            raise RuntimeError(f'checkpoint {checkpoint} does not fit the model of the config:\n{e}') from None
        meta = state.get('meta', {}).get('dataset_meta')
    model.dataset_meta = dict(meta) if meta else _test_set_metainfo(config)
    return model.to(device).eval()


def _read_checkpoint(path: str) -> dict:
    if osp.isdir(path):
        raise IsADirectoryError(f'{path} is a folder (a DeepSpeed checkpoint?): make one file of it first with '
                                f'python tools/zero_to_fp32.py {path}')
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {path}')
    try:
        # memory-mapped: a 6B checkpoint is read into the model's own memory, not into a second 24 GB copy
        state = torch.load(path, map_location='cpu', weights_only=False, mmap=True)
    except RuntimeError:  # the pre-1.6 (non-zip) format cannot be mapped
        state = torch.load(path, map_location='cpu', weights_only=False)
    if not isinstance(state, dict):
        raise TypeError(f'{path} holds a {type(state).__name__}, not a state dict or a training checkpoint')
    return state


def _test_set_metainfo(config: Config) -> dict:
    from mmengine.registry import DATASETS
    dataset = dict(config.test_dataloader.dataset, lazy_init=True)  # names only: no file is read
    return dict(DATASETS.build(dataset).metainfo)
