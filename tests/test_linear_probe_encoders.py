"""Other encoders through the linear-probe tool: extract --backbone timm:NAME / hf:DIR into caches of their
own, and compare's one table and bar plot over two tiny encoders."""
import json
import re

import pytest
from conftest import TINY_300M, load_tool, randomize_, tiny_vit

from internvit_dense.datasets.synthetic_imagenet import generate_synthetic_imagenet

pytestmark = pytest.mark.usefixtures('one_thread')
NUM_CLASSES = 5
TIMM_KW = dict(embed_dim=TINY_300M['embed_dims'], depth=TINY_300M['depth'], num_heads=TINY_300M['num_heads'])


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    from safetensors.torch import save_file
    from transformers import Dinov2Config, Dinov2Model

    base = tmp_path_factory.mktemp('lp_encoders')
    data = str(base / 'data')
    generate_synthetic_imagenet(data, num_classes=NUM_CLASSES, train_per_class=16, val_per_class=6,
                                variant_per_class=3, size=(32, 48), progress=False)
    # the same weights as our InternViT-300M (tiny widths) and as timm's vit_intern300m
    ours = tiny_vit(TINY_300M, seed=2, img_size=28, pretrain_size=28)
    timm_file = base / 'intern300m_tiny.safetensors'
    save_file({k: v.contiguous() for k, v in ours.state_dict().items()}, str(timm_file))
    hf_dir = base / 'dinov2_tiny'
    randomize_(Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                        intermediate_size=64, patch_size=14, image_size=28)), seed=4
               ).save_pretrained(str(hf_dir))
    return dict(base=base, data=data, timm_file=str(timm_file), hf_dir=str(hf_dir), tool=load_tool('linear_probe'))


def extract(setup, *backbone_args):
    before = set((setup['base'] / 'cache').iterdir()) if (setup['base'] / 'cache').is_dir() else set()
    setup['tool'].main(['extract', '--data-root', setup['data'], *backbone_args, '--img-size', '28',
                        '--blocks', 'last2', '--cache-root', str(setup['base'] / 'cache'), '--workers', '0',
                        '--batch-size', '32', '--dtype', 'float32', '--quiet'])
    (new,) = set((setup['base'] / 'cache').iterdir()) - before
    return str(new)


def test_extract_other_encoders_sweep_eval_and_compare(setup, capsys):
    import numpy as np

    from internvit_dense.checkpoint import save_checkpoint
    from internvit_dense.linear_probe.cache import FeatureCache

    tool, base = setup['tool'], setup['base']
    timm_cache = extract(setup, '--backbone', 'timm:vit_intern300m_patch14_448', '--checkpoint', setup['timm_file'],
                         '--model-kwargs', json.dumps(dict(TIMM_KW, img_size=28)))
    hf_cache = extract(setup, '--backbone', f"hf:{setup['hf_dir']}")
    # our InternViT with the same weights as the timm file: its own cache, the same features
    ours_pth = str(base / 'ours.pth')
    save_checkpoint(tiny_vit(TINY_300M, seed=2, img_size=28, pretrain_size=28), ours_pth)
    ours_cache = extract(setup, '--checkpoint', ours_pth, '--arch', json.dumps(TINY_300M), '--pretrain-size', '28')
    printed = capsys.readouterr().out
    assert (f"encoder: timm:vit_intern300m_patch14_448, {TINY_300M['depth']} blocks x {TINY_300M['embed_dims']} "
            'dims') in printed
    assert f"encoder: hf:{setup['hf_dir']}, 2 blocks x 32 dims" in printed

    caches = {n: FeatureCache(c) for n, c in (('timm', timm_cache), ('hf', hf_cache), ('ours', ours_cache))}
    assert len({c.manifest['key'] for c in caches.values()}) == 3  # the encoder is part of the identity
    assert caches['timm'].identity['encoder']['name'] == 'vit_intern300m_patch14_448'
    assert caches['hf'].identity['encoder']['model_type'] == 'dinov2'
    assert 'encoder' not in caches['ours'].identity  # InternViT caches keep their keys
    for split in ('train', 'in1k', 'sketch'):
        a, b = caches['timm'].load(split), caches['ours'].load(split)
        for key in a.arrays:
            np.testing.assert_allclose(a.arrays[key], b.arrays[key], rtol=1e-4, atol=1e-4)

    for cache in (timm_cache, hf_cache):
        tool.main(['sweep', '--cache', cache, '--n-last', '1,2', '--steps', '300', '--lrs', '0.1,1', '--quiet'])
        tool.main(['eval', '--cache', cache])
    capsys.readouterr()
    plot = base / 'compare.png'
    tool.main(['compare', timm_cache, f'{hf_cache}/sweep/eval.json', '--plot', str(plot)])
    out = capsys.readouterr().out
    rows = {m.group(1).strip(): m.group(2) for m in
            re.finditer(r'^((?:timm|hf):\S+ \(\S+\))\s+([\d.]+)', out, re.M)}
    timm_row, hf_row = 'timm:vit_intern300m_patch14_448 (intern300m_tiny.safetensors)', 'hf:dinov2 (dinov2_tiny)'
    assert set(rows) == {timm_row, hf_row}, out
    for name, cache in ((timm_row, timm_cache), (hf_row, hf_cache)):
        in1k = json.load(open(f'{cache}/sweep/eval.json'))['results'][0]
        assert in1k['variant'] == 'in1k' and float(rows[name]) == pytest.approx(in1k['top1'], abs=0.051)
    assert 'IN-1K     ReaL       V2        A        R   Sketch' in out
    assert 'InternViT-6B (paper)' in out and 'DINOv2-g (paper)' in out
    with open(plot, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_a_hub_name_is_refused_with_what_to_do(setup):
    with pytest.raises(SystemExit, match='--checkpoint FILE'):
        setup['tool'].main(['extract', '--data-root', setup['data'], '--backbone', 'timm:vit_large_patch14_dinov2',
                            '--cache-root', str(setup['base'] / 'c2')])
    with pytest.raises(SystemExit, match='huggingface-cli download facebook/dinov2-base'):
        setup['tool'].main(['extract', '--data-root', setup['data'], '--backbone', 'hf:facebook/dinov2-base',
                            '--cache-root', str(setup['base'] / 'c2')])
