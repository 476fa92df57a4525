from .optimizers import LayerDecayOptimWrapperConstructor, check_trainable, get_layer_id

__all__ = ['LayerDecayOptimWrapperConstructor', 'check_trainable', 'get_layer_id']
