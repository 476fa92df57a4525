"""A trained model from a config and a checkpoint, for inference in Python (and tools/infer.py)::

    from internvit_dense.apis import init_model
    from mmseg.apis import inference_model           # mmdet.apis.inference_detector for detection configs
    model = init_model('configs/segmentation/...py', 'work_dirs/.../iter_80000.pth', device='cuda:0')
    result = inference_model(model, 'image.jpg')      # SegDataSample: result.pred_sem_seg

It is mmseg's ``init_model`` / mmdet's ``init_detector`` (the config's ``default_scope`` picks which)
with two differences. The checkpoint is loaded strictly, so one that does not fit the config fails
instead of leaving random weights. And it loads the checkpoints our training writes on torch >= 2.6,
whose ``weights_only`` default refuses the objects mmengine stores beside the weights: the file is
one the caller names, trusted as tools/test.py trusts it. InternVL's released ADE20K checkpoints
load as they are too, into the config of their recipe (a file of another recipe is refused with the reason).
"""
import os
import os.path as osp
import warnings
from typing import Optional, Union

import torch
from mmengine.config import Config

from internvit_dense.checkpoint.model_checkpoints import load_model_checkpoint


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
    if checkpoint is not None:  # before building: a 6B model takes a while to build
        if osp.isdir(checkpoint):
            raise IsADirectoryError(f'{checkpoint} is a folder (a DeepSpeed checkpoint?): make one file of it first '
                                    f'with python tools/zero_to_fp32.py {checkpoint}')
        if not osp.isfile(checkpoint):
            raise FileNotFoundError(f'checkpoint not found: {checkpoint}')
    scope = config.get('default_scope')
    if scope not in ('mmseg', 'mmdet'):
        raise ValueError(f"init_model builds segmentation (default_scope='mmseg') and detection ('mmdet') models; "
                         f'this config has default_scope={scope!r} (linear probing: tools/test.py, '
                         'tools/linear_probe.py)')

    if scope == 'mmdet':
        from mmdet.apis import init_detector
        with warnings.catch_warnings():  # 'checkpoint is None, use COCO classes': the classes are set below
            warnings.filterwarnings('ignore', message='checkpoint is None')
            model = init_detector(config, checkpoint=None, device='cpu')
    else:
        from mmseg.apis import init_model as init_segmentor
        model = init_segmentor(config, checkpoint=None, device='cpu')

    meta = None
    if checkpoint is not None:
        # ours, or one of InternVL's released task checkpoints as it is; strictly, memory-mapped
        meta = (load_model_checkpoint(model, str(checkpoint), strict=True) or {}).get('dataset_meta')
    model.dataset_meta = dict(meta) if meta else _test_set_metainfo(config)
    return model.to(device).eval()


def _test_set_metainfo(config: Config) -> dict:
    from mmengine.registry import DATASETS
    dataset = dict(config.test_dataloader.dataset, lazy_init=True)  # names only: no file is read
    return dict(DATASETS.build(dataset).metainfo)
