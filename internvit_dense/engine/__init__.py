from . import fileio  # noqa: F401  registers the atomic local file backend
from .hooks import SafeCheckpointHook, StopOnNonFiniteLoss
from .optimizers import LayerDecayOptimWrapperConstructor, check_trainable, get_layer_id

__all__ = ['LayerDecayOptimWrapperConstructor', 'SafeCheckpointHook', 'StopOnNonFiniteLoss', 'check_trainable',
           'get_layer_id']
