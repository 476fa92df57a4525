"""The feature cache: an interrupted extraction resumes without recomputing, and ends equal to an uninterrupted one."""
import json
import os

import numpy as np
import pytest
from conftest import TINY_6B, tiny_vit

from internvit_dense.datasets.imagenet import list_split, train_wnids
from internvit_dense.datasets.synthetic_imagenet import generate_synthetic_imagenet
from internvit_dense.linear_probe.cache import CacheError, FeatureCache, cache_key, checkpoint_identity
from internvit_dense.linear_probe.extract import eval_pipeline, extract_split, train_pipeline

ARCH = dict(TINY_6B)  # the project's tiny architecture
IMG = 28


pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module')
def train_items(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('syn_imagenet'))
    generate_synthetic_imagenet(root, num_classes=3, train_per_class=7, val_per_class=2, variant_per_class=1,
                                size=(32, 44), progress=False)
    items = list_split(os.path.join(root, 'imagenet-1k', 'train'), train_wnids(root))
    return [p for p, _ in items], [label for _, label in items]


def identity(**kw):
    return dict(dict(checkpoint=dict(kind='random', seed=0), arch=ARCH, img_size=IMG, blocks=[0, 1]), **kw)


class Interrupt(Exception):
    pass


def run(cache, items, model, views, on_batch=None, workers=0):
    paths, labels = items
    pipeline = train_pipeline(IMG) if views > 1 else eval_pipeline(IMG)
    return extract_split(cache, 'train', paths, labels, model, pipeline, views=views, seed=5, batch_size=4,
                         chunk_size=8, num_workers=workers, dtype='float32', meta=dict(classes=['a', 'b', 'c']),
                         progress=False, on_batch=on_batch)


@pytest.mark.parametrize('views', [1, 2])
def test_interrupted_extraction_resumes_and_equals_one_go(train_items, tmp_path, views):
    model = tiny_vit(ARCH, img_size=IMG, pretrain_size=IMG, frozen=True)
    rows = views * len(train_items[0])  # 21 images: chunks of 8, 8, 5 (x views)

    # Interrupted in the middle of the third chunk (batches of 4: chunk = 2 batches).
    interrupted = FeatureCache(str(tmp_path / 'resumed'), identity(views=views))
    seen = []

    def die_on_fifth(n):
        seen.append(n)
        if len(seen) == 5:
            raise Interrupt
    with pytest.raises(Interrupt):
        run(interrupted, train_items, model, views, die_on_fifth)
    state = json.loads((tmp_path / 'resumed' / 'manifest.json').read_text())['splits']['train']
    assert state['done'] == [0, 1] and not state['complete']

    # A rerun (a new process would reopen the folder the same way) computes only the rest.
    computed = []
    resumed = FeatureCache(str(tmp_path / 'resumed'), identity(views=views))
    info = run(resumed, train_items, model, views, computed.append)
    assert info['complete']
    assert sum(computed) == rows - 16  # chunks 0 and 1 (16 rows) were not recomputed
    again = []
    run(FeatureCache(str(tmp_path / 'resumed'), identity(views=views)), train_items, model, views, again.append)
    assert again == []  # a complete split is not touched

    # The same job in one go, through worker processes: equal to the last bit.
    one_go = FeatureCache(str(tmp_path / 'one_go'), identity(views=views))
    run(one_go, train_items, model, views, workers=2)
    a, b = resumed.load('train'), one_go.load('train')
    assert a.views == b.views == views and a.arrays.keys() == b.arrays.keys()
    for key in a.arrays:
        assert a.arrays[key].shape == (rows, ARCH['embed_dims'])
        np.testing.assert_array_equal(np.asarray(a.arrays[key]), np.asarray(b.arrays[key]))
    np.testing.assert_array_equal(a.labels, b.labels)
    # what was cached is what the backbone gives
    cls_first = np.asarray(a.arrays[('cls', 1)][0])
    assert np.abs(cls_first).sum() > 0
    if views == 2:  # augmented views differ from each other (seeded per view, not repeated)
        n = len(train_items[0])
        assert not np.allclose(a.arrays[('cls', 1)][:n], a.arrays[('cls', 1)][n:])


def test_cache_refuses_mixing(train_items, tmp_path):
    model = tiny_vit(ARCH, img_size=IMG, pretrain_size=IMG, frozen=True)
    root = str(tmp_path / 'c')
    cache = FeatureCache(root, identity())
    paths, labels = train_items
    cache.prepare_split('train', paths, labels, ARCH['embed_dims'], chunk_size=8)
    with pytest.raises(CacheError, match='different backbone'):
        FeatureCache(root, identity(img_size=56))
    with pytest.raises(CacheError, match='other settings'):  # another file list in a started split
        FeatureCache(root, identity()).prepare_split('train', paths[:-1], labels[:-1], ARCH['embed_dims'],
                                                     chunk_size=8)
    with pytest.raises(CacheError, match='incomplete'):
        FeatureCache(root).load('train')
    with pytest.raises(CacheError, match='not a feature cache'):
        FeatureCache(str(tmp_path / 'nothing'))
    # different checkpoints / blocks / sizes land in different folders
    keys = {cache_key(identity()), cache_key(identity(blocks=[1])), cache_key(identity(img_size=56))}
    assert len(keys) == 3
    with pytest.raises(CacheError, match='float16'):
        fp16 = FeatureCache(str(tmp_path / 'fp16'), identity())
        fp16.prepare_split('x', ['a'], [0], 2, chunk_size=1, dtype='float16')
        fp16.write_chunk('x', 0, {k: np.full((1, 2), 1e6, np.float32) for k in fp16.keys()})
    del model


def test_checkpoint_identity_follows_content_not_path(tmp_path):
    a, b, c = tmp_path / 'a.pth', tmp_path / 'sub' / 'a.pth', tmp_path / 'c.pth'
    b.parent.mkdir()
    a.write_bytes(b'x' * 3000)
    b.write_bytes(b'x' * 3000)
    c.write_bytes(b'x' * 2999 + b'y')
    assert checkpoint_identity(str(a)) == checkpoint_identity(str(b))
    assert checkpoint_identity(str(a)) != checkpoint_identity(str(c))
