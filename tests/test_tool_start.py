"""What a tool's start is spared, and that nothing else changes: mmengine.optim and mmdet's models load without
transformers and scikit-learn (internvit_dense/engine/deferred_optimizers.py, deferred_mmdet_imports.py) while
``type='Adafactor'`` and mmdet's modules still get those packages' classes, and the config is formatted once per text
(engine/workarounds.py, remember_config_formatting)."""
import os.path as osp
import subprocess
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

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


# A config read in a plain interpreter, as `init_model(config_path)` or a notebook reads one: its runtime's
# custom_imports load internvit_dense.engine before the models, so mmengine.optim is spared transformers there too.
CONFIG_READ = r'''
import sys
from mmengine.config import Config
for path in sys.argv[1:]:
    Config.fromfile(path)
    late = [m for m in ('transformers', 'peft') if m in sys.modules]
    assert not late, f'{late} imported by reading {path}'
from mmengine.optim.optimizer.builder import TRANSFORMERS_OPTIMIZERS
assert TRANSFORMERS_OPTIMIZERS == ['Adafactor'], TRANSFORMERS_OPTIMIZERS  # still named, resolved when built
print('OK')
'''


def test_reading_a_config_spares_transformers_in_every_runtime():
    configs = ['configs/segmentation/tiny/tiny_upernet_full_synthetic.py',  # default_runtime.py
               'configs/detection/tiny/tiny_mask-rcnn_fpn_synthetic.py',  # default_runtime_det.py
               'configs/classification/internvit_6b_linear_probe_in1k.py']  # default_runtime_cls.py
    proc = subprocess.run([sys.executable, '-c', CONFIG_READ, *configs], capture_output=True, text=True, timeout=300,
                          cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout.strip().endswith('OK'), proc.stderr[-3000:]

# mmdet's names that come from transformers or scikit-learn, printed as a plain interpreter binds them (mmdet imported
# alone) and as a tool's start binds them (internvit_dense.engine first): stand-ins resolved to what they stand for.
MMDET_OPTIONAL_NAMES = r'''
import sys
if sys.argv[1] == 'tool':
    import internvit_dense.engine.cli  # what every tool imports first
    import mmseg.models, mmdet.models, mmdet.datasets  # what a detection tool loads
    late = [m for m in ('transformers', 'sklearn') if m in sys.modules]
    assert not late, f'{late} imported by mmdet at start'
else:
    import mmdet.models, mmdet.datasets
import importlib
NAMES = {'mmdet.models.language_models.bert': ['AutoTokenizer', 'BertConfig', 'HFBertModel'],
         'mmdet.models.dense_heads.atss_vlfusion_head': ['BertConfig'],
         'mmdet.datasets.transforms.text_transformers': ['AutoTokenizer', 'HFBertModel'],
         'mmdet.models.utils.vlfuse_helper': ['BertConfig', 'BertPreTrainedModel', 'apply_chunking_to_forward',
                                              'HFBertAttention', 'HFBertIntermediate', 'HFBertOutput'],
         'mmdet.models.task_modules.tracking.interpolation': ['GPR', 'RBF', 'HAS_SKIKIT_LEARN'],
         'mmdet.models.dense_heads.paa_head': ['skm']}
for module, names in NAMES.items():
    m = importlib.import_module(module)
    for name in names:
        value = getattr(m, name)
        value = value.resolve() if hasattr(value, 'resolve') else value
        print(module, name, getattr(value, '__module__', None), getattr(value, '__qualname__', None),
              getattr(value, '__name__', repr(value)))
    if module.endswith('vlfuse_helper'):  # the GLIP layers built on them
        print(module, 'BertEncoderLayer bases', m.BertEncoderLayer.__mro__[1].__qualname__)
'''


def test_mmdet_loads_without_transformers_and_sklearn_and_binds_what_it_binds_alone():
    runs = {}
    for mode in ('plain', 'tool'):
        proc = subprocess.run([sys.executable, '-c', MMDET_OPTIONAL_NAMES, mode], capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[mode] = [line for line in proc.stdout.splitlines() if line.startswith('mmdet.')]  # not DeepSpeed's
    assert runs['tool'] == runs['plain']
    for expected in ('mmdet.models.language_models.bert HFBertModel transformers.models.bert.modeling_bert BertModel',
                     'mmdet.models.dense_heads.paa_head skm None None sklearn.mixture',
                     'mmdet.models.task_modules.tracking.interpolation HAS_SKIKIT_LEARN'):
        assert any(line.startswith(expected) for line in runs['plain']), (expected, runs['plain'])


def test_the_config_is_formatted_once_per_text(monkeypatch):
    from mmengine.config import Config
    from mmengine.config import config as mmengine_config

    from internvit_dense.engine.workarounds import remember_config_formatting
    yapf_format = mmengine_config.FormatCode
    calls = []

    def counting(*args, **kwargs):
        calls.append(1)
        return yapf_format(*args, **kwargs)
    cfg = Config(dict(model=dict(type='EncoderDecoder', backbone=dict(type='InternViT', arch='tiny')),
                      train_cfg=dict(max_iters=10)))
    expected = cfg.pretty_text  # as mmengine formats it
    monkeypatch.setattr(mmengine_config, 'FormatCode', counting)
    remember_config_formatting()
    assert [cfg.pretty_text for _ in range(3)] == [expected] * 3 and len(calls) == 1
    cfg.train_cfg.max_iters = 20  # a changed config is a new text
    assert cfg.pretty_text == expected.replace('max_iters=10', 'max_iters=20') and len(calls) == 2
