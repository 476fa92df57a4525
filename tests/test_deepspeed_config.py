"""How configs and tools/train.py flags become a DeepSpeed run (no training; see test_deepspeed.py)."""
import os

import pytest
from mmengine.config import Config
from seg_utils import ROOT, TINY

from internvit_dense.engine import deepspeed as ds

BASES = os.path.join(ROOT, 'configs', '_base_', 'deepspeed')


def load(path):
    return Config.fromfile(os.path.join(ROOT, path))


def base_strategy(name):
    return Config.fromfile(os.path.join(BASES, f'{name}.py')).strategy.to_dict()


def test_6b_deepspeed_config_is_the_internvl_recipe():
    cfg = load('configs/segmentation/internvit_6b_upernet_full_ade20k_504_deepspeed.py')
    plain = load('configs/segmentation/internvit_6b_upernet_full_ade20k_504.py')
    assert cfg.model == plain.model and cfg.optim_wrapper == plain.optim_wrapper
    zero = cfg.strategy.zero_optimization
    assert cfg.strategy.type == 'DeepSpeedStrategy' and zero.stage == 1 and zero.overlap_comm
    assert zero.reduce_bucket_size == zero.allgather_bucket_size == 5e8
    assert ds.precision_of(cfg.strategy) == 'bf16'

    ds.to_deepspeed_optim_wrapper(cfg)
    ds.complete_half_precision(cfg.strategy)
    wrapper = cfg.optim_wrapper
    assert wrapper.type == 'DeepSpeedOptimWrapper'
    # the same optimizer and layer-decay constructor, handed to DeepSpeed
    assert wrapper.optimizer == plain.optim_wrapper.optimizer
    assert wrapper.constructor == 'LayerDecayOptimWrapperConstructor'
    assert wrapper.paramwise_cfg == dict(layer_decay_rate=0.95)
    assert 'clip_grad' not in wrapper
    assert cfg.strategy.gradient_clipping == 0.0  # clip_grad=None: no clipping, not DeepSpeed's default 1.0
    assert cfg.strategy.inputs_to_half == ['inputs']
    assert cfg.strategy.config.data_types.buffer_dtype == 'bf16'


@pytest.mark.parametrize('name,stage,precision,offload', [
    ('zero1', 1, 'fp32', False), ('zero2', 2, 'fp32', False), ('zero3', 3, 'fp32', False),
    ('zero1_bf16', 1, 'bf16', False), ('zero2_bf16', 2, 'bf16', False), ('zero3_bf16', 3, 'bf16', False),
    ('zero2_fp16', 2, 'fp16', False), ('zero2_bf16_offload', 2, 'bf16', True), ('zero3_bf16_offload', 3, 'bf16', True)])
def test_base_files(name, stage, precision, offload):
    strategy = base_strategy(name)
    assert strategy['type'] == 'DeepSpeedStrategy' and strategy['zero_optimization']['stage'] == stage
    assert ds.precision_of(strategy) == precision
    assert ('offload_optimizer' in strategy['zero_optimization']) == offload
    # --deepspeed STAGE --deepspeed-precision P gives what the file says
    made = base_strategy(f'zero{stage}')
    ds.set_precision(made, precision)
    assert ds.precision_of(made) == precision
    assert made.get('inputs_to_half') == strategy.get('inputs_to_half')
    assert (made.get('config') or {}).get('data_types') == (strategy.get('config') or {}).get('data_types')


def test_flags_give_a_plain_config_deepspeed_and_change_only_what_they_name():
    cfg = load(TINY.format('upernet_full'))
    assert not ds.uses_deepspeed(cfg)
    ds.apply_deepspeed_options(cfg, base_strategy('zero3'), precision='bf16', offload=True)
    assert ds.uses_deepspeed(cfg) and cfg.strategy.zero_optimization.stage == 3
    assert ds.precision_of(cfg.strategy) == 'bf16'
    assert cfg.strategy.zero_optimization.offload_optimizer.device == 'cpu'
    assert cfg.strategy.config.zero_force_ds_cpu_optimizer is False

    # on a DeepSpeed config, --deepspeed N changes the stage and keeps the precision
    cfg = load('configs/segmentation/tiny/tiny_upernet_full_synthetic_deepspeed.py')
    ds.apply_deepspeed_options(cfg, base_strategy('zero2'))
    assert cfg.strategy.zero_optimization.stage == 2 and ds.precision_of(cfg.strategy) == 'bf16'
    ds.apply_deepspeed_options(cfg, precision='fp32')
    assert ds.precision_of(cfg.strategy) == 'fp32' and 'inputs_to_half' not in cfg.strategy
    assert 'buffer_dtype' not in cfg.strategy.config.data_types

    with pytest.raises(ValueError, match='need DeepSpeed'):
        ds.apply_deepspeed_options(load(TINY.format('upernet_full')), precision='bf16')


def test_optim_wrapper_translation():
    cfg = load(TINY.format('upernet_full'))
    ds.apply_deepspeed_options(cfg, base_strategy('zero2'))
    cfg.optim_wrapper.clip_grad = dict(max_norm=3.0, norm_type=2)
    cfg.optim_wrapper.accumulative_counts = 4
    ds.to_deepspeed_optim_wrapper(cfg)
    assert cfg.strategy.gradient_clipping == 3.0 and cfg.strategy.gradient_accumulation_steps == 4
    assert set(cfg.optim_wrapper) == {'type', 'optimizer', 'constructor', 'paramwise_cfg'}
    ds.to_deepspeed_optim_wrapper(cfg)  # the config a run saves trains again as it is
    assert cfg.strategy.gradient_clipping == 3.0

    for change, message in [(dict(type='AmpOptimWrapper'), 'mixed precision itself'),
                            (dict(clip_grad=dict(type='value', clip_value=1.0)), 'L2 norm'),
                            (dict(clip_grad=dict(max_norm=2.0)), 'contradicts')]:
        cfg = load(TINY.format('upernet_full'))
        ds.apply_deepspeed_options(cfg, base_strategy('zero2'))
        cfg.strategy.gradient_clipping = 1.0
        cfg.optim_wrapper.update(change)
        with pytest.raises(ValueError, match=message):
            ds.to_deepspeed_optim_wrapper(cfg)


def test_sgd_is_allowed_under_zero_and_other_untested_optimizers_are_not():
    """DeepSpeed refuses optimizers outside its tested ZeRO list unless zero_allow_untested_optimizer: allowed for
    SGD (the linear probe's; elementwise, so partitioning leaves its step unchanged), for no other."""
    import torch
    for optimizer, allowed in [(dict(type='SGD', lr=0.1), True), (dict(type=torch.optim.SGD, lr=0.1), True),
                               (dict(type='AdamW', lr=1e-4), False), (dict(type='LARS', lr=0.1), False)]:
        cfg = load(TINY.format('upernet_full'))
        ds.apply_deepspeed_options(cfg, base_strategy('zero1'))
        cfg.optim_wrapper.optimizer = optimizer
        ds.to_deepspeed_optim_wrapper(cfg)
        assert cfg.strategy.get('config', {}).get('zero_allow_untested_optimizer', False) is allowed, optimizer
    cfg.strategy.config = 'ds_config.json'  # the user's own file: left as written
    cfg.optim_wrapper.optimizer = dict(type='SGD', lr=0.1)
    ds.to_deepspeed_optim_wrapper(cfg)
    assert cfg.strategy.config == 'ds_config.json'


def test_fp16_segmentation_losses_are_averaged_outside_fp16():
    cfg = load(TINY.format('upernet_full'))
    assert ds.fp16_safe_segmentation_losses(cfg) == []
    assert cfg.model.decode_head.loss_decode.reduction == 'none'
    assert cfg.model.auxiliary_head.loss_decode.reduction == 'none'
    cfg.model.decode_head.loss_decode.avg_non_ignore = True  # a mean over fewer pixels than mmengine's
    cfg.model.decode_head.loss_decode.reduction = 'mean'
    assert ds.fp16_safe_segmentation_losses(cfg) == ['model.decode_head[0] CrossEntropyLoss']


def test_checkpoint_checks(tmp_path):
    with pytest.raises(ValueError, match='does not exist'):
        ds.check_zero_checkpoint(str(tmp_path / 'nothing'))
    (tmp_path / 'plain.pth').write_bytes(b'')
    with pytest.raises(ValueError, match='single-file checkpoint'):
        ds.check_zero_checkpoint(str(tmp_path / 'plain.pth'))
    folder = tmp_path / 'iter_4.pth'
    folder.mkdir()
    with pytest.raises(ValueError, match='no DeepSpeed model states'):
        ds.check_zero_checkpoint(str(folder))
    (folder / 'mp_rank_00_model_states.pt').write_bytes(b'')
    with pytest.raises(ValueError, match='no optimizer states'):
        ds.check_zero_checkpoint(str(folder))
    for rank in range(2):
        (folder / f'zero_pp_rank_{rank}_mp_rank_00_optim_states.pt').write_bytes(b'')
    ds.check_zero_checkpoint(str(folder), world_size=2)
    with pytest.raises(ValueError, match='written by 2 processes and this run has 1'):
        ds.check_zero_checkpoint(str(folder), world_size=1)
