"""mmengine.optim loads without transformers at a tool's start, and ``type='Adafactor'`` still builds
transformers' optimizer (internvit_dense/engine/deferred_optimizers.py)."""
import subprocess
import sys

PROBE = r'''
import sys, time
start = time.perf_counter()
import internvit_dense.engine.cli  # what every tool imports first
import mmengine.optim
assert 'transformers' not in sys.modules and 'peft' not in sys.modules, 'transformers imported at start'
import torch
from mmengine.optim import build_optim_wrapper
from mmengine.optim.optimizer.builder import TRANSFORMERS_OPTIMIZERS
from transformers import Adafactor
assert 'Adafactor' in TRANSFORMERS_OPTIMIZERS
model = torch.nn.Linear(4, 2)
wrapper = build_optim_wrapper(model, dict(optimizer=dict(type='Adafactor', lr=1e-3, relative_step=False,
                                                         scale_parameter=False)))
assert type(wrapper.optimizer) is Adafactor, type(wrapper.optimizer)
before = model.weight.detach().clone()
model(torch.ones(3, 4)).sum().backward()
wrapper.step()
assert not torch.equal(before, model.weight)
print('OK')
'''


def test_tools_start_without_transformers_and_adafactor_still_builds():
    proc = subprocess.run([sys.executable, '-c', PROBE], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith('OK'), proc.stderr[-3000:]
