"""The scoring rules of ImageNet-ReaL, -A and -R on hand-made cases whose answers are known."""
import json
import math

import pytest
import torch

from internvit_dense.linear_probe import scoring
from internvit_dense.linear_probe.metric import LinearProbeAccuracy


def one_hot_logits(rows, num_classes=10):
    """Logits ranking classes in the given order per row (first = arg-max)."""
    out = torch.zeros(len(rows), num_classes)
    for i, ranking in enumerate(rows):
        for rank, c in enumerate(ranking):
            out[i, c] = 10.0 - rank
    return out


def test_top1_counts_argmax_only():
    logits = one_hot_logits([[3, 1], [2, 0], [5, 4]])
    sc = scoring.score(logits, 'top1', torch.tensor([3, 0, 5]))
    assert (sc.correct, sc.total, sc.skipped) == (2, 3, 0)
    assert sc.accuracy == pytest.approx(200 / 3)
    # top-5 finds the label at rank 2
    assert scoring.score(logits, 'top1', torch.tensor([3, 0, 5]), k=5).correct == 3


def test_subset_rule_ignores_classes_outside_the_set():
    subset = [1, 4, 7]  # the classes an ImageNet-A-like set can contain
    logits = one_hot_logits([
        [9, 4, 1],  # global arg-max 9 is outside: restricted to the subset, 4 wins -> correct
        [0, 2, 7],  # 0 and 2 outside: 7 wins -> correct
        [4, 7, 1],  # 4 is inside and wins -> wrong for label 7
        [2, 1, 9],  # only 1 of the ranked classes is inside: 1 -> wrong for label 4
    ])
    labels = torch.tensor([4, 7, 7, 4])
    assert scoring.score(logits, 'top1', labels).correct == 0  # unrestricted, nothing is right
    sc = scoring.score(logits, 'subset', labels, subset=subset)
    assert (sc.correct, sc.total) == (2, 4)
    pred = scoring.predict(logits, 'subset', subset)
    assert set(pred.view(-1).tolist()) <= set(subset)
    # top-k never exceeds the subset size and finds any label inside it
    assert scoring.predict(logits, 'subset', subset, k=5).shape == (4, 3)
    assert scoring.score(logits, 'subset', labels, subset=subset, k=5).correct == 4
    # indices keep their 1000-class meaning; they are not renumbered 0..len(subset)-1
    assert scoring.restrict(logits, subset)[0].argmax().item() == 4


def test_real_rule_uses_label_sets_and_skips_empty_ones():
    logits = one_hot_logits([[2], [5], [3], [7], [1], [0]])
    real = [
        [2],  # plain hit
        [3, 5],  # prediction is the second of two valid labels -> correct
        [],  # no label fits: left out of the score
        [6],  # originally filed as 7 (the prediction), ReaL says 6 -> wrong
        [],  # skipped too, whatever is predicted
        [0, 4],  # hit
    ]
    sc = scoring.score(logits, 'real', real_labels=real)
    assert (sc.correct, sc.total, sc.skipped) == (3, 4, 2)
    assert sc.accuracy == 75.0
    with pytest.raises(ValueError):
        scoring.score_real(torch.tensor([1, 2]), [[1]])
    assert math.isnan(scoring.score(logits[2:3], 'real', real_labels=[[]]).accuracy)  # nothing scored


def test_rules_refuse_missing_inputs():
    logits = torch.zeros(2, 5)
    with pytest.raises(ValueError):
        scoring.score(logits, 'subset', torch.tensor([0, 1]))
    with pytest.raises(ValueError):
        scoring.score(logits, 'real')
    with pytest.raises(ValueError):
        scoring.score(logits, 'top3', torch.tensor([0, 1]))


def _samples(logits, labels, real=None):
    out = []
    for i in range(len(labels)):
        s = dict(pred_score=logits[i].softmax(0), gt_label=torch.tensor([labels[i]]))
        if real is not None:
            s['real_labels'] = real[i]
        out.append(s)
    return out


@pytest.mark.parametrize('variant', ['in1k', 'a', 'real'])
def test_runner_metric_applies_the_variant_rule(variant):
    subset = [1, 4, 7]
    logits = one_hot_logits([[9, 4, 1], [0, 2, 7], [4, 7, 1], [2, 1, 9]])
    labels = [4, 7, 7, 4]
    real = [[4], [], [7, 4], [9]]
    metric = LinearProbeAccuracy(topk=(1,))
    metric.dataset_meta = dict(variant=variant, class_subset=subset)
    metric.process({}, _samples(logits, labels, real if variant == 'real' else None))
    top1 = metric.compute_metrics(metric.results)['top1']
    expected = {
        'in1k': scoring.score(logits, 'top1', torch.tensor(labels)),
        'a': scoring.score(logits, 'subset', torch.tensor(labels), subset=subset),
        'real': scoring.score(logits, 'real', real_labels=real),
    }[variant].accuracy
    assert top1 == pytest.approx(expected)
    assert top1 == pytest.approx({'in1k': 0.0, 'a': 50.0, 'real': 100 / 3}[variant])


def test_real_labels_follow_val_numbers_not_file_order(tmp_path):
    from internvit_dense.datasets.imagenet import real_labels_for
    sets = [[0], [1, 2], [], [3]]
    (tmp_path / 'real.json').write_text(json.dumps(sets))
    items = [(f'/x/n0000000{c}/ILSVRC2012_val_{n:08d}.JPEG', c) for n, c in ((4, 3), (1, 0), (3, 1), (2, 2))]
    assert real_labels_for(items, str(tmp_path / 'real.json')) == [[3], [0], [], [1, 2]]
    with pytest.raises(ValueError, match='not an ILSVRC2012_val'):
        real_labels_for([('/x/other.JPEG', 0)], str(tmp_path / 'real.json'))
    with pytest.raises(ValueError):
        real_labels_for([('/x/ILSVRC2012_val_00000005.JPEG', 0)], str(tmp_path / 'real.json'))
