import json
import subprocess
import sys

import torch
from conftest import TINY_300M, tiny_vit
from seg_utils import ROOT

from internvit_dense.checkpoint import load_state_dict, save_checkpoint


def convert(*args):
    proc = subprocess.run([sys.executable, f'{ROOT}/tools/convert_checkpoint.py', *map(str, args)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_convert_through_every_format(tmp_path):
    src = tiny_vit(TINY_300M)
    save_checkpoint(src, str(tmp_path / 'a.pth'))
    arch = '--arch=' + json.dumps(TINY_300M)
    out = convert(tmp_path / 'a.pth', tmp_path / 'hf', '--to', 'transformers', '--pretrain-size', 56,
                  '--patch-size', 14, arch, '--shard-size', '40KB')
    assert 'from pth to transformers' in out
    convert(tmp_path / 'hf', tmp_path / 'ogv', '--to', 'opengvlab-hf')
    convert(tmp_path / 'ogv', tmp_path / 'back.pth', '--to', 'pth')
    back, fmt = load_state_dict(str(tmp_path / 'back.pth'))
    assert fmt == 'pth' and back.keys() == src.state_dict().keys()
    for k, v in src.state_dict().items():
        assert torch.equal(back[k], v), k
