# First, before mmengine.runner loads: it imports DeepSpeed (mmengine/_strategy/deepspeed.py) catching
# only ImportError, so a DeepSpeed that fails otherwise (no CUDA toolkit on a GPU host) would stop every tool
from .device_env import guard_deepspeed_import
from .deferred_mmdet_imports import defer_optional_imports_in_mmdet
from .deferred_optimizers import defer_transformers_optimizers

guard_deepspeed_import()
# and mmengine.optim would import all of transformers (and peft) to register one optimizer: seconds per tool start
defer_transformers_optimizers()
# and mmdet's GLIP / Grounding DINO text modules would import it again (and its tracking, scikit-learn) as mmseg's
# models load mmdet's
defer_optional_imports_in_mmdet()

from . import fileio  # noqa: F401,E402  registers the atomic local file backend
from .hooks import SafeCheckpointHook, StopOnNonFiniteLoss  # noqa: E402
from .optimizers import LayerDecayOptimWrapperConstructor, check_trainable, get_layer_id  # noqa: E402

__all__ = ['LayerDecayOptimWrapperConstructor', 'SafeCheckpointHook', 'StopOnNonFiniteLoss', 'check_trainable',
           'get_layer_id']
