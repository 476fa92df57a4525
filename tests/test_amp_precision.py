"""--amp's precision is explicit and the same on a CPU and a GPU (issue 19): bf16 where the device has it, fp16
only on request or on a GPU without bf16, a GradScaler only for fp16. The GPU's bf16 support is a stand-in here."""
import json
import os

import pytest
import torch
from conftest import load_tool
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper

from internvit_dense.engine.training import amp_dtype, settle_amp_config, use_amp
from internvit_dense.engine.workarounds import apply_process_workarounds

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINEAR = os.path.join(ROOT, 'configs/segmentation/tiny/tiny_linear_frozen_synthetic.py')
H100, V100, CPU = (True, 'NVIDIA H100 (sm90)'), (False, 'Tesla V100 (sm70)'), (True, 'the CPU')


def amp_config(requested='auto', bf16=H100, path=LINEAR, **wrapper):
    cfg = Config.fromfile(path)
    cfg.optim_wrapper.update(wrapper)
    line = use_amp(cfg, requested, bf16)
    return cfg.optim_wrapper, line


def test_bare_amp_is_bf16_without_loss_scaling_where_the_device_has_bf16():
    for device in (H100, CPU):
        wrapper, line = amp_config(bf16=device)
        assert wrapper.type == 'AmpOptimWrapper' and wrapper.dtype == 'bfloat16'
        assert wrapper.loss_scale == dict(enabled=False)
        assert line == f'mixed precision: autocast bf16 ({device[1]} supports bf16), no loss scaling'


def test_fp16_on_request_or_without_bf16_with_a_dynamic_loss_scale():
    wrapper, line = amp_config(bf16=V100)
    assert wrapper.dtype == 'float16' and wrapper.get('loss_scale', 'dynamic') == 'dynamic'
    assert line == 'mixed precision: autocast fp16 (Tesla V100 (sm70) has no bf16), dynamic loss scaling (GradScaler)'
    wrapper, line = amp_config('fp16', bf16=H100)
    assert wrapper.dtype == 'float16' and 'fp16 (asked for), dynamic loss scaling' in line


def test_impossible_requests_say_so():
    with pytest.raises(ValueError, match='--amp bf16: Tesla V100 \\(sm70\\) has no bf16 .* use --amp fp16'):
        amp_config('bf16', bf16=V100)
    with pytest.raises(ValueError, match="--amp fp16: mmengine's autocast on a CPU is bf16 only"):
        amp_dtype('fp16', True, 'the CPU')
    with pytest.raises(ValueError, match='fp16 autocast without a loss scale'):
        amp_config('fp16', bf16=H100, loss_scale=dict(enabled=False))


def test_a_config_that_names_amp_keeps_its_dtype_and_gets_one_if_it_has_none():
    wrapper, _ = amp_config(bf16=H100, type='AmpOptimWrapper', dtype='bfloat16')  # named: kept
    assert wrapper.dtype == 'bfloat16'
    with pytest.raises(ValueError, match='--amp bf16: Tesla V100'):  # or refused where the GPU has no bf16
        amp_config(bf16=V100, type='AmpOptimWrapper', dtype='bfloat16')
    wrapper, _ = amp_config('fp16', bf16=H100, type='AmpOptimWrapper', dtype='bfloat16')  # the flag wins
    assert wrapper.dtype == 'float16'
    cfg = Config.fromfile(os.path.join(ROOT, 'configs/classification/internvit_6b_linear_probe_in1k.py'))
    assert settle_amp_config(cfg).startswith('mixed precision: autocast bf16')  # no --amp: its own AmpOptimWrapper
    assert cfg.optim_wrapper.loss_scale == dict(enabled=False)
    cfg = Config.fromfile(LINEAR)
    assert settle_amp_config(cfg) is None and cfg.optim_wrapper.type == 'OptimWrapper'


def test_the_wrapper_the_runner_builds_on_this_cpu():
    """mmengine's AmpOptimWrapper asserts a GPU; the process workaround lets it run on a CPU in bf16."""
    apply_process_workarounds()
    wrapper, _ = amp_config(bf16=CPU)
    model = torch.nn.Linear(4, 4)
    built = build_optim_wrapper(model, wrapper)
    assert type(built).__name__ == 'AmpOptimWrapper' and built.cast_dtype == torch.bfloat16
    assert not built.loss_scaler.is_enabled()
    with built.optim_context(model):
        out = model(torch.randn(2, 4))
    assert out.dtype == torch.bfloat16
    built.update_params(out.float().sum())
    # no loss scale, so no overflow skips: a non-finite gradient norm stops the run as without --amp
    from types import SimpleNamespace

    from internvit_dense.engine.hooks import StopOnNonFiniteLoss
    assert not StopOnNonFiniteLoss._loss_scaled(SimpleNamespace(optim_wrapper=built))


def test_train_with_amp_on_the_cpu_runs_its_matmuls_in_bf16(tmp_path):
    """One iteration of the tiny linear config with --amp through tools/train.py (gpu_check's training row, run
    on this CPU): the backbone and head matmuls in bf16, the loss finite, the precision line printed."""
    tool = load_tool('gpu_check')
    out = tmp_path / 'row.json'
    torch_threads = torch.get_num_threads()
    try:
        status = tool.main(['--cpu', '--only', 'train.linear.amp', '--json', str(out), '--work-dir', str(tmp_path)])
    finally:
        torch.set_num_threads(torch_threads)
    (row,) = json.loads(out.read_text())['rows']
    assert status == tool.EXIT_NO_GPU and row['status'] == 'ok', row
    assert row['data']['dtypes'] == {'backbone': ['bfloat16'], 'decode_head': ['bfloat16']}
    log = (tmp_path / 'train.linear.amp' / 'gpu_check.log').read_text()
    assert 'mixed precision: autocast bf16 (the CPU supports bf16), no loss scaling' in log
