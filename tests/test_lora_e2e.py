"""Issue 23 end to end: a tiny LoRA config through tools/train.py, tools/test.py, tools/infer.py and
tools/convert_checkpoint.py --merge-lora; adapters-only checkpoints over a pretrained tiny backbone, refused over
another; killed and resumed bit for bit."""
import os

import pytest
import torch
from seg_utils import ROOT, TINY, data_options, load_ckpt, miou_of, run_tool
from test_resume_exact import SEG, differing, kill_and_resume

from internvit_dense.checkpoint import save_checkpoint
from internvit_dense.datasets.synthetic_ade20k import generate_synthetic_ade20k
from internvit_dense.models.backbones import InternViT

pytest.importorskip('peft')
LORA = TINY.format('upernet_lora')
# LoRA vs frozen over the same tiny backbone is not asserted: at 20 iterations the outcome depends on the adapters'
# initial draw (+2.32 and -5.26 mIoU measured, docs/lora.md); a longer comparison did not fit this machine's budget.


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('lora_ade')
    generate_synthetic_ade20k(str(root), num_train=200, num_val=24, seed=0, progress=False, overwrite=True)
    return root


def with_pretrained(tmp_path, base, vit_path, name):
    """``base`` with its tiny backbone loaded from ``vit_path``, as the 6B configs load theirs."""
    config = tmp_path / f'{name}.py'
    config.write_text(f"_base_ = ['{os.path.join(ROOT, base)}']\n"
                      "model = dict(backbone=dict(init_cfg=dict(_delete_=True, type='Pretrained', "
                      f"checkpoint='{vit_path}')))\n")
    return config


def tiny_pretrained(path, seed=0):
    torch.manual_seed(seed)
    save_checkpoint(InternViT(arch='tiny', img_size=112, pretrain_size=112), str(path))
    return str(path)


def test_lora_checkpoint_test_infer_merge_and_wrong_base(data_root, tmp_path):
    vit = tiny_pretrained(tmp_path / 'vit.pth')
    lora_cfg = with_pretrained(tmp_path, LORA, vit, 'lora')
    quick = data_options(data_root, ['train_cfg.max_iters=2', 'train_cfg.val_interval=100',
                                     'default_hooks.checkpoint.interval=2', 'default_hooks.checkpoint.save_best=None',
                                     'train_dataloader.batch_size=2'])
    run_tool('train.py', lora_cfg, '--work-dir', tmp_path / 'lora', *quick)
    lora_ckpt = tmp_path / 'lora' / 'iter_2.pth'

    # the LoRA checkpoint: adapters, neck and heads, and the record of its base; no base weight
    sd = load_ckpt(lora_ckpt)['state_dict']
    backbone = [k for k in sd if k.startswith('backbone.')]
    assert backbone and all('.lora_' in k or k == 'backbone.lora._extra_state' for k in backbone)
    assert sd['backbone.lora._extra_state']['base_path'] == vit
    assert any(k.startswith('neck.') for k in sd) and any(k.startswith('decode_head.') for k in sd)
    base = torch.load(vit, map_location='cpu', weights_only=True)
    base_bytes = sum(v.numel() * v.element_size() for v in base.values())
    adapter_bytes = sum(v.numel() * v.element_size() for k, v in sd.items() if k.startswith('backbone.')
                        and torch.is_tensor(v))
    print(f'backbone in the LoRA checkpoint: {adapter_bytes:,} bytes of adapters vs {base_bytes:,} bytes of base '
          f'weights ({base_bytes / adapter_bytes:.1f}x)')
    assert adapter_bytes * 10 < base_bytes

    # tools/test.py with the config's pretrained file; merged into the weights, a plain checkpoint of the
    # config without lora predicts the same
    lora_miou = miou_of(run_tool('test.py', lora_cfg, lora_ckpt, '--work-dir', tmp_path / 'test', *quick).stdout)
    merged = tmp_path / 'merged.pth'
    out = run_tool('convert_checkpoint.py', lora_ckpt, merged, '--merge-lora', lora_cfg, '--dtype', 'float32').stdout
    assert 'merged 16 LoRA layers' in out and 'model.backbone.lora=None' in out
    merged_sd = load_ckpt(merged)['state_dict']
    assert 'backbone.blocks.0.attn.qkv.weight' in merged_sd and not any('lora' in k for k in merged_sd)
    proc = run_tool('test.py', lora_cfg, merged, '--work-dir', tmp_path / 'merged_test',
                    *quick, 'model.backbone.lora=None')
    assert abs(miou_of(proc.stdout) - lora_miou) < 0.05

    # over another base: refused by tools/test.py and tools/infer.py, naming both files
    other = tiny_pretrained(tmp_path / 'other.pth', seed=1)
    wrong_cfg = with_pretrained(tmp_path, LORA, other, 'wrong')
    proc = run_tool('test.py', wrong_cfg, lora_ckpt, '--work-dir', tmp_path / 'wrong', *quick, check=False)
    assert proc.returncode != 0
    assert 'wrong base weights' in proc.stderr and 'vit.pth' in proc.stderr and 'other.pth' in proc.stderr
    image = next((data_root / 'images' / 'validation').iterdir())
    ok = run_tool('infer.py', lora_cfg, lora_ckpt, image, '--out-dir', tmp_path / 'infer', '--device', 'cpu',
                  '--quiet')
    assert 'done: 1 images' in ok.stdout
    proc = run_tool('infer.py', wrong_cfg, lora_ckpt, image, '--out-dir', tmp_path / 'infer2', '--device', 'cpu',
                    check=False)
    assert proc.returncode != 0 and 'wrong base weights' in proc.stderr


def test_lora_killed_and_resumed_is_bit_identical(data_root, tmp_path):
    vit = tiny_pretrained(tmp_path / 'vit.pth')
    config = with_pretrained(tmp_path, LORA, vit, 'lora_resume')
    options = data_options(data_root, SEG)[1:]
    straight, resumed, _ = kill_and_resume(tmp_path, str(config), options)
    assert any('.lora_' in k for k in straight['state_dict'])
    records = [ckpt['state_dict'].pop('backbone.lora._extra_state') for ckpt in (straight, resumed)]
    assert records[0] == records[1] and records[0]['base_path'] == vit
    assert differing(straight, resumed) == []
