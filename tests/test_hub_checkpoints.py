"""Checkpoints named on the Hugging Face Hub (internvit_dense/checkpoint/hub.py), with no network.

Each test lays out a cache as huggingface_hub lays it out (models--ORG--NAME/{blobs,refs/main,snapshots/REV/...}),
holding tiny weights, and resolves names from it under HF_HUB_OFFLINE=1: huggingface_hub's own reading of its
cache is what is tested, not a copy of it.
"""
import hashlib
import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, tiny_vit

from internvit_dense.checkpoint import FORMAT_OPENGVLAB_HF, HubCheckpointError, resolve_checkpoint, save_checkpoint
from internvit_dense.checkpoint.hub import parse_hub_name
from internvit_dense.models.backbones import InternViT

REV = 'a' * 40  # a commit hash, as refs/main records one


def add_to_hub_cache(cache, repo_id, files: dict, revision=REV):
    """``files`` (name in the repository -> local file) into ``cache`` in huggingface_hub's layout: content-addressed
    blobs, refs/main naming the revision, the snapshot's files linking to the blobs."""
    repo = cache / ('models--' + repo_id.replace('/', '--'))
    (repo / 'refs').mkdir(parents=True, exist_ok=True)
    (repo / 'refs' / 'main').write_text(revision)
    for name, source in files.items():
        data = open(source, 'rb').read()
        blob = repo / 'blobs' / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / 'snapshots' / revision / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return repo / 'snapshots' / revision


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty cache, offline: what huggingface_hub reads HF_HUB_CACHE and HF_HUB_OFFLINE into."""
    from huggingface_hub import constants
    cache = tmp_path / 'hub'
    cache.mkdir()
    monkeypatch.setattr(constants, 'HF_HUB_CACHE', str(cache))
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', True)
    return cache


@pytest.fixture
def released_vit(tmp_path, hub_cache):
    """A tiny InternViT published as 'OpenGVLabTest/InternViT-tiny' (config.json + model.safetensors, OpenGVLab's
    Hugging Face layout) and one .pth file of it in 'OpenGVLabTest/InternVL', both in the cache."""
    vit = tiny_vit(seed=1)
    folder = tmp_path / 'upload'
    save_checkpoint(vit, folder, fmt=FORMAT_OPENGVLAB_HF)
    add_to_hub_cache(hub_cache, 'OpenGVLabTest/InternViT-tiny',
                     {name: folder / name for name in os.listdir(folder)})
    save_checkpoint(vit, tmp_path / 'tiny.pth')
    add_to_hub_cache(hub_cache, 'OpenGVLabTest/InternVL', {'backbones/tiny_vit.pth': tmp_path / 'tiny.pth'})
    return vit


def same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_spellings():
    assert parse_hub_name('OpenGVLab/InternViT-6B-448px-V2_5') == ('OpenGVLab/InternViT-6B-448px-V2_5', None, None)
    assert parse_hub_name('hf://OpenGVLab/InternVL/upernet.pth') == ('OpenGVLab/InternVL', None, 'upernet.pth')
    assert parse_hub_name('hf://ORG/NAME@v1.0/sub/f.pth') == ('ORG/NAME', 'v1.0', 'sub/f.pth')
    assert parse_hub_name('hf://ORG/NAME') == ('ORG/NAME', None, None)
    # local paths: absolute, relative with more parts, or a file name in a folder
    for local in ('/abs/path', 'pretrained/intern_vit_6b_224px.pth', 'a/b/c', './x/y', 'work_dirs/iter_4.pth', 'vit'):
        assert parse_hub_name(local) is None, local
    with pytest.raises(HubCheckpointError, match='only model repositories'):
        parse_hub_name('hf://datasets/ORG/NAME/file.pth')


def test_a_repository_id_loads_from_the_cache_offline(released_vit, hub_cache):
    vit = InternViT.from_pretrained('OpenGVLabTest/InternViT-tiny')  # the architecture from the cached config.json
    assert same_weights(vit, released_vit)
    # the path handed to the loader is the cache's snapshot
    assert resolve_checkpoint('OpenGVLabTest/InternViT-tiny') == str(
        hub_cache / 'models--OpenGVLabTest--InternViT-tiny' / 'snapshots' / REV)


def test_a_file_in_a_repository_loads_through_init_cfg(released_vit):
    vit = InternViT(arch=dict(released_vit.arch), patch_size=14, pretrain_size=56, img_size=56,
                    init_cfg=dict(type='Pretrained', checkpoint='hf://OpenGVLabTest/InternVL/backbones/tiny_vit.pth'))
    vit.init_weights()
    assert same_weights(vit.eval(), released_vit)


def test_missing_from_cache_and_offline_is_one_line_naming_cache_and_command(hub_cache):
    with pytest.raises(HubCheckpointError) as e:
        resolve_checkpoint('OpenGVLabTest/InternViT-absent')
    msg = str(e.value)
    assert '\n' not in msg
    assert msg.startswith('OpenGVLabTest/InternViT-absent: no such local path, and not in the Hugging Face cache')
    assert str(hub_cache) in msg and 'HF_HUB_OFFLINE=1' in msg
    assert 'download OpenGVLabTest/InternViT-absent' in msg
    with pytest.raises(HubCheckpointError, match=r'hf://OpenGVLabTest/InternVL/missing\.pth: no such local path, and '
                                                 r'not in the Hugging Face cache .* download OpenGVLabTest/InternVL '
                                                 r'missing\.pth$'):
        resolve_checkpoint('hf://OpenGVLabTest/InternVL/missing.pth')


def test_a_local_path_wins_over_a_repository_id(released_vit, tmp_path, monkeypatch):
    other = tiny_vit(seed=2)
    monkeypatch.chdir(tmp_path)
    save_checkpoint(other, tmp_path / 'OpenGVLabTest' / 'InternViT-tiny', fmt=FORMAT_OPENGVLAB_HF)
    assert resolve_checkpoint('OpenGVLabTest/InternViT-tiny') == 'OpenGVLabTest/InternViT-tiny'
    vit = InternViT.from_pretrained('OpenGVLabTest/InternViT-tiny')
    assert same_weights(vit, other) and not same_weights(vit, released_vit)


def test_a_tool_resolves_a_name_with_the_hub_environment_variables(released_vit, hub_cache, tmp_path):
    """A user's run: HF_HOME and HF_HUB_OFFLINE=1 in the environment, a Hub name on the command line."""
    (tmp_path / 'home').mkdir()
    os.rename(hub_cache, tmp_path / 'home' / 'hub')  # HF_HOME/hub is the cache
    env = dict(os.environ, HF_HOME=str(tmp_path / 'home'), HF_HUB_OFFLINE='1', OMP_NUM_THREADS='1')
    env.pop('HF_HUB_CACHE', None)
    tool = os.path.join(ROOT, 'tools', 'convert_checkpoint.py')
    out = tmp_path / 'converted.pth'
    proc = subprocess.run([sys.executable, tool, 'hf://OpenGVLabTest/InternVL/backbones/tiny_vit.pth', str(out),
                           '--to', 'pth'], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sd = torch.load(out, map_location='cpu')
    assert torch.equal(sd['pos_embed'], released_vit.state_dict()['pos_embed'])

    proc = subprocess.run([sys.executable, tool, 'OpenGVLabTest/InternViT-absent', str(tmp_path / 'x.pth'),
                           '--to', 'pth'], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert f"not in the Hugging Face cache {tmp_path / 'home' / 'hub'} (HF_HUB_OFFLINE=1)" in last, proc.stderr
