import contextlib
import io
import json

import pytest
import torch
from conftest import TINY_300M, tiny_vit

from internvit_dense.checkpoint import load_state_dict, save_checkpoint


def convert(*args):
    """tools/convert_checkpoint.py's main in this process (a new interpreter costs seconds of imports); its stdout."""
    from conftest import load_tool
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = load_tool('convert_checkpoint').main([str(a) for a in args])
    assert not status, f'convert_checkpoint {args} returned {status}:\n{out.getvalue()[-3000:]}'
    return out.getvalue()


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


def run_in_process(*args):
    """tools/convert_checkpoint.py main() in this process (a subprocess costs seconds of imports)."""
    from conftest import load_tool
    return load_tool('convert_checkpoint').main([str(a) for a in args])


def convert_fails(capsys, *args):
    """The tool refuses with a message (argparse's or SystemExit's), not a traceback."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        run_in_process(*args)
    return f'{capsys.readouterr().err}{e.value.code if isinstance(e.value.code, str) else ""}'


def test_an_existing_destination_is_refused_then_replaced_whole(tmp_path, capsys):
    """A sharded conversion into the folder of an earlier one: refused; with --overwrite the folder is replaced,
    no old shard or index is left for a loader to read."""
    small, big = tiny_vit(TINY_300M, seed=0), tiny_vit(TINY_300M, seed=1)
    save_checkpoint(small, str(tmp_path / 'a.pth'))
    save_checkpoint(big, str(tmp_path / 'b.pth'))
    arch = ['--arch=' + json.dumps(TINY_300M), '--pretrain-size', 56]
    run_in_process(tmp_path / 'a.pth', tmp_path / 'hf', '--to', 'opengvlab-hf', *arch, '--shard-size', '20KB')
    before = sorted(p.name for p in (tmp_path / 'hf').iterdir())
    assert len(before) > 3  # shards + index + config
    err = convert_fails(capsys, tmp_path / 'b.pth', tmp_path / 'hf', '--to', 'opengvlab-hf', *arch)
    assert f'{tmp_path / "hf"} already exists (a folder holding {len(before)} entries' in err
    assert 'pass --overwrite to replace it whole' in err
    assert sorted(p.name for p in (tmp_path / 'hf').iterdir()) == before  # untouched
    run_in_process(tmp_path / 'b.pth', tmp_path / 'hf', '--to', 'opengvlab-hf', *arch, '--overwrite')
    assert sorted(p.name for p in (tmp_path / 'hf').iterdir()) == ['config.json', 'model.safetensors']
    back, _ = load_state_dict(str(tmp_path / 'hf'))
    for k, v in big.state_dict().items():
        assert torch.equal(back[k], v), k
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.')]  # no temporary left behind
    # a file destination too
    run_in_process(tmp_path / 'a.pth', tmp_path / 'c.pth', '--to', 'pth')
    err = convert_fails(capsys, tmp_path / 'b.pth', tmp_path / 'c.pth', '--to', 'pth')
    assert 'c.pth already exists (a file)' in err


def test_a_hugging_face_folder_without_config_json_is_named_as_such(tmp_path, capsys):
    save_checkpoint(tiny_vit(TINY_300M), str(tmp_path / 'a.pth'))
    run_in_process(tmp_path / 'a.pth', tmp_path / 'hf', '--to', 'opengvlab-hf', '--arch=' + json.dumps(TINY_300M))
    (tmp_path / 'hf' / 'config.json').unlink()
    err = convert_fails(capsys, tmp_path / 'hf', tmp_path / 'out', '--to', 'transformers')
    assert f'{tmp_path / "hf"} is a Hugging Face folder without a config.json' in err
    assert "put the model's config.json beside its weights, or pass --arch" in err
    assert 'a .pth source carries no config' not in err


def test_a_corrupt_file_renamed_pth_is_named_with_what_to_do(tmp_path, capsys):
    html = tmp_path / 'intern_vit_6b_224px.pth'
    html.write_text('<!DOCTYPE html><html><body>Access denied</body></html>')
    err = convert_fails(capsys, html, tmp_path / 'out', '--to', 'pth')
    assert f'cannot read checkpoint {html}: a text file (an HTML error page' in err
    assert 'Download or save it again' in err
    junk = tmp_path / 'junk.pth'
    junk.write_bytes(bytes(range(256)) * 4)  # what used to fail with "UnpicklingError: Memo value not found"
    err = convert_fails(capsys, junk, tmp_path / 'out', '--to', 'pth')
    assert f'cannot read checkpoint {junk}:' in err and 'Download or save it again' in err
    good = tmp_path / 'good.pth'
    save_checkpoint(tiny_vit(TINY_300M), str(good))
    cut = tmp_path / 'cut.pth'
    cut.write_bytes(good.read_bytes()[:2000])  # an interrupted download
    err = convert_fails(capsys, cut, tmp_path / 'out', '--to', 'pth')
    assert f'cannot read checkpoint {cut}: a zip archive as PyTorch writes, but damaged or cut short' in err
    assert not (tmp_path / 'out').exists()


def test_internvl_task_checkpoints_to_plain_mmseg(tmp_path, monkeypatch, capsys):
    from internvl_reference import cls_head_keys, random_state, seg_file_keys, write_cls_head_file
    sd = random_state(seg_file_keys('upernet', 32, 4, 128, grid=36, ch=16, aux_ch=16))
    torch.save(dict(state_dict=sd, meta=dict(CLASSES=('wall', 'building'), PALETTE=[[1, 2, 3], [4, 5, 6]])),
               tmp_path / 'upernet.pth')
    capsys.readouterr()
    run_in_process(tmp_path / 'upernet.pth', tmp_path / 'ours.pth', '--from', 'internvl-seg')
    assert 'internvit_6b_upernet_frozen_ade20k_504.py' in capsys.readouterr().out
    ours = torch.load(tmp_path / 'ours.pth', map_location='cpu', weights_only=False)
    assert ours['meta']['dataset_meta'] == dict(classes=('wall', 'building'), palette=[[1, 2, 3], [4, 5, 6]])
    assert torch.equal(ours['state_dict']['neck.upsample_4x.3.weight'], sd['backbone.up1.3.weight'])
    assert ours['state_dict']['backbone.pos_embed'].dtype == torch.bfloat16  # as in the file
    assert not any(k.startswith(('backbone.up', 'decode_head.norm.')) for k in ours['state_dict'])
    assert 'is not an internvl-cls checkpoint: its format is internvl-seg' in convert_fails(
        capsys, tmp_path / 'upernet.pth', tmp_path / 'x.pth', '--from', 'internvl-cls')

    head = random_state(cls_head_keys(32, 10))
    write_cls_head_file(tmp_path / 'head.pth', head, 56, 4, 32, 2, 'vit.pth', monkeypatch)
    run_in_process(tmp_path / 'head.pth', tmp_path / 'head_ours.pth', '--from', 'internvl-cls')
    ours = torch.load(tmp_path / 'head_ours.pth', map_location='cpu', weights_only=False)['state_dict']
    assert set(ours) == {'head.bn.weight', 'head.bn.bias', 'head.bn.running_mean', 'head.bn.running_var',
                         'head.bn.num_batches_tracked', 'head.fc.weight', 'head.fc.bias'}
