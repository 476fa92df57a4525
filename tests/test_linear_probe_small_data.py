"""Defaults that work at any data size: on a small set with real structure (scikit-learn's handwritten
digits through a fixed random conv net) the default sweep lands near scikit-learn's cross-validated
LogisticRegression on the same cached features; the schedule and the holdout say what they chose."""
import numpy as np
import pytest
import torch

from internvit_dense.linear_probe.cache import FeatureCache
from internvit_dense.linear_probe.grid import FeatureSpec, stratified_holdout
from internvit_dense.linear_probe.sweep import FEW_STEPS, MIN_STEPS, plan_schedule, run_sweep

pytestmark = pytest.mark.usefixtures('one_thread')
BLOCKS = [0, 1]
WIDTH = 64
TRAIN_PER_CLASS = 32  # 320 training images of 10 classes, the size of the set the issue was found on


def conv_features(images: np.ndarray, seed: int = 0) -> dict:
    """Two fixed random 3x3 conv + ReLU layers over 8x8 digits: per layer, a 'class token' (max over
    positions) and the mean 'patch token' (mean over positions)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(images.astype(np.float32) / 16.0).view(-1, 1, 8, 8)
    out = {}
    c_in = 1
    for block in BLOCKS:
        w = torch.randn(WIDTH, c_in, 3, 3, generator=g) / (3 * c_in ** 0.5)
        x = torch.relu(torch.nn.functional.conv2d(x, w, padding=1))
        out[('cls', block)] = x.amax(dim=(2, 3)).numpy()
        out[('patch', block)] = x.mean(dim=(2, 3)).numpy()
        c_in = WIDTH
    return out


@pytest.fixture(scope='module')
def digits_cache(tmp_path_factory):
    from sklearn.datasets import load_digits
    digits = load_digits()
    rng = np.random.default_rng(0)
    train_idx = np.concatenate([rng.permutation(np.flatnonzero(digits.target == c))[:TRAIN_PER_CLASS]
                                for c in range(10)])
    test_idx = np.setdiff1d(np.arange(len(digits.target)), train_idx)
    feats = conv_features(digits.images)
    cache = FeatureCache(str(tmp_path_factory.mktemp('digits')), dict(kind='digits-random-conv', blocks=BLOCKS))
    data = {}
    for split, idx in (('train', train_idx), ('in1k', test_idx)):
        arrays = {k: v[idx] for k, v in feats.items()}
        y = digits.target[idx]
        cache.prepare_split(split, [f'{split}{i}' for i in idx], y.tolist(), WIDTH, chunk_size=len(idx),
                            dtype='float32', meta=dict(classes=[str(c) for c in range(10)]))
        cache.write_chunk(split, 0, arrays)
        data[split] = (y, arrays)
    cache.close()
    return cache, data


def sklearn_cv_accuracy(data, keys) -> float:
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    (ytr, tr), (yte, te) = data['train'], data['in1k']
    x_tr = np.concatenate([tr[k] for k in keys], 1)
    x_te = np.concatenate([te[k] for k in keys], 1)
    clf = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=10, cv=5, max_iter=3000))
    clf.fit(x_tr, ytr)
    return 100 * float((clf.predict(x_te) == yte).mean())


def test_default_sweep_is_within_1_5_points_of_sklearn_cv(digits_cache, tmp_path):
    cache, data = digits_cache
    logs = []
    summary = run_sweep(cache, str(tmp_path), progress=False, log=logs.append)  # every default
    best = summary['best']
    sk = sklearn_cv_accuracy(data, FeatureSpec.parse(best['feature']).keys(BLOCKS))
    sk_recipe = sklearn_cv_accuracy(data, FeatureSpec(1, True).keys(BLOCKS))

    # the defaults before: batch 1024 x 10 epochs was 10 optimizer steps on this set; 2% held out
    with pytest.warns(UserWarning, match='only 10 optimizer steps'):
        old = run_sweep(cache, str(tmp_path / 'old'), steps=10, holdout_min_per_class=1, progress=False,
                        log=lambda *a: None)
    print(f"default sweep: {best['feature']} lr {best['lr']}: IN-1k(test) {best['val']:.2f}; sklearn "
          f"LogisticRegressionCV on the same features {sk:.2f} (on last1+avgpool {sk_recipe:.2f}); "
          f"old defaults ({old['steps']} steps, {old['num_holdout']} held out): {old['best']['val']:.2f}")
    assert best['val'] >= sk - 1.5
    assert old['best']['val'] < sk - 1.5  # the test tells the two apart
    assert summary['steps'] >= MIN_STEPS and summary['batch_size'] < 320
    assert summary['num_holdout'] == 10 * 10  # the floor: 10 per class, not 2% of 32
    assert any('schedule: ' in line and 'optimizer steps' in line for line in logs)
    assert any('selection: on 100 held-out training images (10-10 per class, 10 classes)' in line for line in logs)


def test_schedule_keeps_the_recipe_on_large_data_and_grows_on_small():
    imagenet = plan_schedule(1_281_167 - 25_623)  # ImageNet train minus a 2% holdout
    assert imagenet.batch == 1024 and imagenet.epochs == pytest.approx(10, abs=0.01)
    assert imagenet.steps == 12_260 and imagenet.warmup == 1226  # one epoch of warm-up
    small = plan_schedule(240)
    assert small.batch == 30 and small.steps_per_epoch == 8 and small.steps == MIN_STEPS
    assert small.warmup == 100 and small.epochs == 125
    assert plan_schedule(240, steps=400).steps == 400
    assert plan_schedule(10).batch == 10


def test_too_few_steps_warn(digits_cache, tmp_path):
    cache, _ = digits_cache
    logs = []
    with pytest.warns(UserWarning, match='optimizer steps'):
        summary = run_sweep(cache, str(tmp_path), steps=FEW_STEPS // 3, lrs=[0.1], n_lasts=[1], avgpool=[True],
                            progress=False, log=logs.append)
    assert summary['steps'] == FEW_STEPS // 3
    assert any('WARNING: only 100 optimizer steps' in line for line in logs)


def test_holdout_floor_per_class():
    labels = np.repeat(np.arange(4), [40, 40, 6, 1000])
    fit, held = stratified_holdout(labels, 0.02, seed=0, min_per_class=10)
    counts = np.bincount(labels[held], minlength=4)
    assert counts.tolist() == [10, 10, 3, 20]  # floor 10, at most half of a small class, 2% of a large one
    assert len(np.intersect1d(fit, held)) == 0 and len(fit) + len(held) == len(labels)


def test_select_on_val_is_labelled_optimistic(digits_cache, tmp_path):
    from internvit_dense.linear_probe.sweep import OPTIMISTIC, format_sweep_table
    cache, _ = digits_cache
    logs = []
    summary = run_sweep(cache, str(tmp_path), select_on='val', lrs=[0.1], n_lasts=[1], avgpool=[True],
                        progress=False, log=logs.append)
    assert summary['optimistic'] and OPTIMISTIC in format_sweep_table(summary)
    assert any(OPTIMISTIC in line for line in logs)
