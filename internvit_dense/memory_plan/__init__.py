"""Memory plan: per-GPU memory of a training config before it is launched (tools/memory_plan.py)."""
from .plan import Plan, apply_overrides, plan_config, stop_if_it_cannot_fit, training_input_size
from .states import Runner, census, deepspeed_estimate, model_states, runner_of
from .trace import StepMemory, fake_tensors, measure_step

__all__ = ['Plan', 'plan_config', 'stop_if_it_cannot_fit', 'apply_overrides', 'training_input_size', 'Runner',
           'census', 'model_states', 'runner_of', 'deepspeed_estimate', 'StepMemory', 'fake_tensors', 'measure_step']
