"""transformers' Adafactor, registered in mmengine's OPTIMIZERS without importing transformers at start.

mmengine imports ``transformers`` when ``mmengine.optim`` loads, only to register ``Adafactor``
(``mmengine/optim/optimizer/builder.py``, ``register_transformers_optimizers``). transformers 5 brings peft, its
modelling code and ``torch._dynamo`` with it: 6 of the 11 seconds ``tools/train.py --help`` took on a 2-core
machine. :func:`defer_transformers_optimizers` lets mmengine find no transformers while ``mmengine.optim`` loads,
then registers ``Adafactor`` under the same name as a function that imports transformers when a config builds it,
so ``optimizer=dict(type='Adafactor', ...)`` works as before.
"""
import importlib.util
import sys


def adafactor(params, *args, **kwargs):
    """transformers' ``Adafactor(params, ...)``, imported on first use."""
    from transformers import Adafactor
    return Adafactor(params, *args, **kwargs)


def defer_transformers_optimizers() -> bool:
    """Loads ``mmengine.optim`` without transformers and registers :func:`adafactor` as ``Adafactor``. Must run
    before anything imports ``mmengine.optim`` (``internvit_dense.engine`` calls it first thing); a no-op when
    mmengine.optim or transformers are loaded already, or transformers is not installed. Returns whether it
    deferred."""
    if 'mmengine.optim' in sys.modules or 'transformers' in sys.modules:
        return False
    try:
        if importlib.util.find_spec('transformers') is None:
            return False
    except (ImportError, ValueError):
        return False
    sys.modules['transformers'] = None  # `from transformers import ...` raises ImportError, which mmengine skips
    try:
        from mmengine.optim.optimizer import builder
    finally:
        if sys.modules.get('transformers', 0) is None:
            del sys.modules['transformers']
    from mmengine.registry import OPTIMIZERS
    if 'Adafactor' not in OPTIMIZERS.module_dict:
        OPTIMIZERS.register_module(name='Adafactor', module=adafactor)
        builder.TRANSFORMERS_OPTIMIZERS.append('Adafactor')
    return True
