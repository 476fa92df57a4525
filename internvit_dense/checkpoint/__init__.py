"""Checkpoint files <-> state dicts under our key names, in every InternViT format.

The layer below the models: it reads files into (name, tensor) pairs plus the architecture a
file describes, fills modules tensor by tensor, and writes checkpoints back. It never imports a
model; ``InternViT.from_pretrained`` builds one from what this package reads.
"""
from .files import CheckpointError, checkpoint_files, read_config, torch_load
from .hub import HubCheckpointError, is_hub_name, resolve_checkpoint
from .formats import (FORMATS, CheckpointFormat, arch_from_config, convert_from_native, detect_format, get_format,
                      register_format)
# the formats register themselves in FORMATS as their modules load
from .backbone_formats import FORMAT_OPENGVLAB_HF, FORMAT_PTH, FORMAT_TRANSFORMERS
from . import internvl_tasks  # noqa: F401  isort: skip
from .loading import (CheckpointReader, assign_tensor, fill_module, load_state_dict, meta_tensors, open_checkpoint,
                      read_arch, save_checkpoint, write_checkpoint)

__all__ = ['HubCheckpointError', 'is_hub_name', 'resolve_checkpoint', 'FORMATS', 'FORMAT_PTH', 'FORMAT_OPENGVLAB_HF',
           'FORMAT_TRANSFORMERS', 'CheckpointError', 'CheckpointFormat', 'CheckpointReader', 'arch_from_config',
           'assign_tensor', 'checkpoint_files', 'convert_from_native', 'detect_format', 'fill_module', 'get_format',
           'register_format', 'load_state_dict', 'meta_tensors', 'open_checkpoint', 'read_arch', 'read_config',
           'save_checkpoint', 'torch_load', 'write_checkpoint']
