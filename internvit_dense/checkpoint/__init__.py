from .formats import FORMAT_OPENGVLAB_HF, FORMAT_PTH, FORMAT_TRANSFORMERS, FORMATS, arch_from_config, detect_format
from .loading import (CheckpointError, build_from_checkpoint, load_pretrained, load_state_dict, read_config,
                      save_checkpoint)

__all__ = ['FORMATS', 'FORMAT_PTH', 'FORMAT_OPENGVLAB_HF', 'FORMAT_TRANSFORMERS', 'CheckpointError',
           'arch_from_config', 'detect_format', 'build_from_checkpoint', 'load_pretrained', 'load_state_dict',
           'read_config', 'save_checkpoint']
