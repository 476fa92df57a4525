"""The one-pass grid: it is N independent recipe classifiers, it matches scikit-learn, it never needs the backbone."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import load_tool

from internvit_dense.linear_probe.cache import FeatureCache, SplitFeatures
from internvit_dense.linear_probe.grid import (RECIPE_SPEC, FeatureSpec, LinearGrid, feature_batches,
                                               make_optimizer, make_scheduler, make_specs, stratified_holdout)
from internvit_dense.linear_probe.sweep import run_sweep

K, C, BLOCKS = 10, 16, [8, 9, 10, 11]
KINDS = ('cls', 'patch')


pytestmark = pytest.mark.usefixtures('one_thread')


class GaussianFeatures:
    """Each cached array is the class mean plus unit noise (then scaled and shifted): the
    Bayes-optimal rule is nearest class mean over the arrays used, and the last block
    plus its mean-patch token carry most of the signal, earlier blocks add some."""

    def __init__(self, seed=0):
        rng = np.random.default_rng(seed)
        self.mus = {(k, b): rng.normal(size=(K, C)) * (0.35 if b == BLOCKS[-1] else 0.2)
                    for b in BLOCKS for k in KINDS}

    def draw(self, n, seed):
        r = np.random.default_rng(seed)
        y = r.integers(K, size=n)
        return y, {key: ((mu[y] + r.normal(size=(n, C))) * 3 + 1).astype(np.float32) for key, mu in self.mus.items()}

    def bayes_accuracy(self, y, arrays, keys):
        d = sum(((arrays[k][:, None, :] - (self.mus[k][None] * 3 + 1)) ** 2).sum(-1) for k in keys)
        return 100 * float((d.argmin(1) == y).mean())


@pytest.fixture(scope='module')
def gaussian_cache(tmp_path_factory):
    gen = GaussianFeatures()
    cache = FeatureCache(str(tmp_path_factory.mktemp('gauss')), dict(kind='gaussian', blocks=BLOCKS))
    data = {}
    for split, n, seed in (('train', 3000, 1), ('in1k', 3000, 2)):
        y, arrays = gen.draw(n, seed)
        cache.prepare_split(split, [f'{split}{i}' for i in range(n)], y.tolist(), C, chunk_size=n, dtype='float32',
                            meta=dict(classes=[f'c{i}' for i in range(K)]))
        cache.write_chunk(split, 0, arrays)
        data[split] = (y, arrays)
    cache.close()
    return cache, gen, data


@pytest.mark.parametrize('precision', ['fp32', 'bf16'])
def test_sweep_matches_sklearn_logistic_regression(gaussian_cache, tmp_path, precision):
    from sklearn.linear_model import LogisticRegression

    cache, gen, data = gaussian_cache
    summary = run_sweep(cache, str(tmp_path), epochs=30, batch_size=256, holdout=0.1, min_steps=0,
                        precision=precision, progress=False, log=lambda *a: None)
    assert summary['precision'] == precision
    (ytr, tr), (yte, te) = data['train'], data['in1k']
    best = summary['best']
    keys = FeatureSpec.parse(best['feature']).keys(BLOCKS)

    def sklearn_accuracy(keys):
        x = np.concatenate([tr[k] for k in keys], 1)
        mean, std = x.mean(0), x.std(0)
        clf = LogisticRegression(max_iter=500).fit((x - mean) / std, ytr)
        return 100 * float((clf.predict((np.concatenate([te[k] for k in keys], 1) - mean) / std) == yte).mean())

    # The known answer: all four blocks plus the mean patch carry the most signal.
    assert best['feature'] == 'last4+avgpool'
    sk = sklearn_accuracy(keys)
    print(f"sweep ({precision}) best {best['feature']} lr {best['lr']}: val {best['val']:.2f}, sklearn {sk:.2f}, "
          f"Bayes {gen.bayes_accuracy(yte, te, keys):.2f}")
    assert best['val'] >= sk - 1.5
    assert best['val'] <= gen.bayes_accuracy(yte, te, keys) + 1.5  # no classifier beats Bayes beyond noise

    # The recipe's feature alone, the learning rate chosen on held-out data as the sweep does.
    recipe = [r for r in summary['results'] if r['feature'] == RECIPE_SPEC.name]
    chosen = max(recipe, key=lambda r: r['holdout'])
    assert chosen['val'] >= sklearn_accuracy(RECIPE_SPEC.keys(BLOCKS)) - 1.5

    saved = json.loads((tmp_path / 'sweep.json').read_text())
    assert saved['best'] == best and len(saved['results']) == 32 and saved['num_classifiers'] == 32
    assert (tmp_path / 'best_classifier.pth').is_file()


def test_grid_is_independent_recipe_heads():
    """Every classifier of the grid ends where the recipe's head (BatchNorm + Linear, torch SGD with
    Nesterov momentum at its own learning rate, the same schedule and batches) ends when trained alone:
    the grid's one optimizer with per-classifier loss weights takes exactly each head's steps."""
    from internvit_dense.models.classifiers import LinearProbeHead

    gen = GaussianFeatures(seed=3)
    y, arrays = gen.draw(400, 4)
    source = SplitFeatures('train', y, 1, arrays)
    lrs = [0.05, 0.8]
    grid = LinearGrid(make_specs(), lrs, BLOCKS, C, K, seed=0)
    bs, epochs = 64, 3
    total, warmup = epochs * (400 // bs), 400 // bs
    grid_opt = make_optimizer(grid, bs)
    grid_sched = make_scheduler(grid_opt, total, warmup)
    heads, opts, scheds = {}, {}, {}
    for s in range(len(grid.specs)):
        for j in range(len(lrs)):
            head = LinearProbeHead(grid.weights[s].shape[0], K)
            with torch.no_grad():  # the same N(0, 0.01) draw as the grid's
                head.fc.weight.copy_(grid.weights[s][:, j].T)
            heads[s, j] = head
            opts[s, j] = torch.optim.SGD(head.fc.parameters(), lr=lrs[j] * bs / 512, momentum=0.9, nesterov=True)
            scheds[s, j] = make_scheduler(opts[s, j], total, warmup)
    rng_grid, rng_heads = np.random.default_rng(7), np.random.default_rng(7)
    seen_lrs = []
    for _ in range(epochs):
        batches = zip(feature_batches(source, np.arange(400), grid.keys, bs, rng_grid, drop_last=True),
                      feature_batches(source, np.arange(400), grid.keys, bs, rng_heads, drop_last=True))
        for (a, labels, _), (a2, labels2, _) in batches:
            grid_opt.zero_grad()
            grid.loss(grid(a, train=True), labels)[0].backward()
            grid_opt.step()
            seen_lrs.append(grid_opt.param_groups[0]['lr'])
            grid_sched.step()
            for (s, j), head in heads.items():
                opts[s, j].zero_grad()
                F.cross_entropy(head(torch.cat([a2[k] for k in grid.spec_keys[s]], 1)), labels2).backward()
                opts[s, j].step()
                scheds[s, j].step()
    base = bs / 512
    assert seen_lrs[0] == pytest.approx(base / warmup) and seen_lrs[warmup - 1] == pytest.approx(base)
    full = {k: torch.from_numpy(v) for k, v in arrays.items()}
    for (s, j), head in heads.items():
        clf = grid.classifier(s, j)
        assert clf.bias.abs().max() > 1e-4  # it learnt something
        torch.testing.assert_close(clf.weight, head.fc.weight.T.detach(), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(clf.bias, head.fc.bias.detach(), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(clf.mean, head.bn.running_mean, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(clf.var, head.bn.running_var, rtol=1e-4, atol=1e-4)
        head.eval()
        x = torch.cat([full[k] for k in grid.spec_keys[s]], 1)
        torch.testing.assert_close(clf.logits(full), head(x).detach(), rtol=1e-4, atol=1e-4)
    # different learning rates really are different classifiers
    assert not torch.allclose(grid.classifier(0, 0).weight, grid.classifier(0, 1).weight)


def test_second_sweep_never_runs_the_backbone(gaussian_cache, tmp_path, monkeypatch, capsys):
    """sweep and eval read the cache only: with every way into the backbone broken, both run, twice."""
    from internvit_dense.models.backbones import InternViT

    def refuse(*args, **kwargs):
        raise AssertionError('the backbone was used')
    for name in ('__init__', 'forward', 'get_intermediate_layers', 'forward_features', 'from_pretrained'):
        monkeypatch.setattr(InternViT, name, refuse)

    tool = load_tool('linear_probe')
    cache, _, _ = gaussian_cache
    outs = []
    for run in range(2):
        out = tmp_path / f'sweep{run}'
        tool.main(['sweep', '--cache', cache.root, '--out', str(out), '--epochs', '3', '--batch-size', '256',
                   '--min-steps', '0', '--holdout', '0.1', '--lrs', '0.05,0.2', '--quiet'])
        tool.main(['eval', '--cache', cache.root, '--sweep', str(out)])
        outs.append(json.loads((out / 'sweep.json').read_text()))
    printed = capsys.readouterr().out
    assert printed.count('sweep finished: 8 classifiers in one pass') == 2
    assert 'ImageNet-1k val' in printed
    for a, b in zip(outs[0]['results'], outs[1]['results']):  # and it is deterministic
        assert a == b


def test_stratified_holdout():
    labels = np.repeat(np.arange(5), [1, 2, 10, 50, 3])
    fit, held = stratified_holdout(labels, 0.1, seed=0)
    assert len(np.intersect1d(fit, held)) == 0
    assert sorted(np.concatenate([fit, held]).tolist()) == list(range(len(labels)))
    held_counts = np.bincount(labels[held], minlength=5)
    assert held_counts.tolist() == [0, 1, 1, 5, 1]  # >= 1 per class that can spare one, ~10% otherwise
    assert stratified_holdout(labels, 0.1, seed=0)[1].tolist() == held.tolist()


def test_feature_specs_and_schedule():
    assert RECIPE_SPEC.keys(BLOCKS) == [('cls', 11), ('patch', 11)]
    assert FeatureSpec(4, True).keys(BLOCKS) == [('cls', 8), ('cls', 9), ('cls', 10), ('cls', 11), ('patch', 11)]
    assert FeatureSpec.parse('last4+avgpool') == FeatureSpec(4, True)
    with pytest.raises(ValueError):
        FeatureSpec(5, False).keys(BLOCKS)
    with pytest.raises(ValueError):
        FeatureSpec.parse('first2')
    # the schedule is torch's: linear warm-up (it + 1) / warmup, then cosine to 0, per optimizer step
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = make_scheduler(opt, 100, 10)
    factors = []
    for _ in range(100):
        factors.append(opt.param_groups[0]['lr'])
        opt.step()
        sched.step()
    assert factors[9] == pytest.approx(1.0) and factors[0] == pytest.approx(0.1)
    assert factors[4] == pytest.approx(0.5)
    assert all(a <= b for a, b in zip(factors[:10], factors[1:10]))  # warm-up rises
    assert all(a >= b for a, b in zip(factors[10:], factors[11:])) and factors[-1] < 0.01  # cosine falls to ~0
    assert factors[55] == pytest.approx(0.5, abs=0.02)  # half-way down the cosine
