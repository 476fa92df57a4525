"""Issue 11: a frozen backbone stored in bf16 under an fp32 head trains as well as the fp32 backbone does."""
import os

import pytest
import torch
from seg_utils import ROOT, TINY, data_options, load_ckpt, miou_of, run_tool

from internvit_dense.checkpoint import save_checkpoint
from internvit_dense.datasets.synthetic_ade20k import generate_synthetic_ade20k
from internvit_dense.models.backbones import InternViT

# Measured on this 2-core machine (tiny linear-probe config, 100 iterations, the same fp32 'pretrained' backbone
# and seed): fp32 backbone 35.80 mIoU, bf16 backbone 35.79. The margin allows for bf16 rounding changing which
# pixels of a small validation set flip.
MAX_MIOU_GAP = 3.0
ITERS = 100


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('synthetic_ade20k_bf16')
    generate_synthetic_ade20k(str(root), num_train=120, num_val=16, seed=0, progress=False, overwrite=True)
    return root


def test_bf16_frozen_backbone_trains_like_fp32(data_root, tmp_path):
    torch.manual_seed(0)
    vit = InternViT(arch='tiny', img_size=112, pretrain_size=112)  # the tiny configs' backbone
    save_checkpoint(vit, tmp_path / 'vit.pth')  # fp32 'pretrained' weights: the bf16 run narrows them on load
    short = [f'train_cfg.max_iters={ITERS}', f'train_cfg.val_interval={ITERS}',
             f'default_hooks.checkpoint.interval={ITERS}', 'default_hooks.checkpoint.save_best=None',
             f'param_scheduler.1.end={ITERS}', 'randomness.seed=0']
    mious = {}
    for dtype in ('float32', 'bfloat16'):
        config = tmp_path / f'linear_{dtype}.py'
        config.write_text(f"_base_ = ['{os.path.join(ROOT, TINY.format('linear_frozen'))}']\n"
                          f"model = dict(backbone=dict(dtype='{dtype}', init_cfg=dict(_delete_=True, "
                          f"type='Pretrained', checkpoint='{tmp_path}/vit.pth')))\n")
        work = tmp_path / dtype
        run_tool('train.py', config, '--work-dir', work, *data_options(data_root, short))
        ckpt = open(work / 'last_checkpoint').read().strip()
        saved = load_ckpt(ckpt)['state_dict']
        qkv, head = saved['backbone.blocks.0.attn.qkv.weight'], saved['decode_head.conv_seg.weight']
        assert qkv.dtype == getattr(torch, dtype) and head.dtype == torch.float32
        assert torch.equal(qkv, vit.blocks[0].attn.qkv.weight.detach().to(qkv.dtype))  # frozen: unchanged
        proc = run_tool('test.py', config, ckpt, '--work-dir', work, *data_options(data_root))
        mious[dtype] = miou_of(proc.stdout)
    print(f'tiny linear frozen after {ITERS} iterations: fp32 backbone {mious["float32"]:.2f} mIoU, '
          f'bf16 backbone {mious["bfloat16"]:.2f} mIoU')
    assert mious['float32'] > 20  # it learned something (chance is a few points)
    assert abs(mious['bfloat16'] - mious['float32']) <= MAX_MIOU_GAP
