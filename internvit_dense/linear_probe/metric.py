"""Top-1/top-5 accuracy for the mmengine runner, under the scoring rule of the data set's variant."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from mmengine.evaluator import BaseMetric
from mmengine.registry import METRICS

from . import scoring
from internvit_dense.datasets.imagenet import VARIANTS


@METRICS.register_module()
class LinearProbeAccuracy(BaseMetric):
    """Accuracy of ``pred_score`` against ``gt_label`` (or ReaL label sets).

    Args:
        topk: which top-k accuracies to report.
        rule: ``top1``, ``subset`` or ``real``; default: the rule of the data set's
            ``variant`` (``ImageNetFolder``), ``top1`` for a plain validation set.
    """
    default_prefix = 'accuracy'

    def __init__(self, topk: Sequence[int] = (1, 5), rule: Optional[str] = None, **kwargs):
        super().__init__(**kwargs)
        self.topk = tuple(topk)
        self.rule = rule

    def _rule(self) -> str:
        if self.rule:
            return self.rule
        variant = (self.dataset_meta or {}).get('variant')
        return VARIANTS[variant].rule if variant in VARIANTS else 'top1'

    def process(self, data_batch, data_samples: Sequence) -> None:
        rule = self._rule()
        subset = (self.dataset_meta or {}).get('class_subset') if rule == 'subset' else None
        k = max(self.topk)
        for sample in data_samples:
            score = sample['pred_score'] if isinstance(sample, dict) else sample.pred_score
            # Only the top k survive to compute_metrics: 50k x 1000 scores would not.
            top = scoring.predict(score.view(1, -1).float(), rule, subset, k)[0].tolist()
            gt = sample['gt_label'] if isinstance(sample, dict) else sample.gt_label
            real = sample.get('real_labels') if isinstance(sample, dict) else sample.metainfo.get('real_labels')
            self.results.append(dict(top=top, gt=int(gt.view(-1)[0]), real=real))

    def compute_metrics(self, results: list) -> dict:
        rule = self._rule()
        out = {}
        for k in self.topk:
            pred = torch.tensor([r['top'][:k] + [-1] * (k - len(r['top'][:k])) for r in results])
            if rule == 'real':
                sc = scoring.score_real(pred, [r['real'] or [] for r in results])
            else:
                sc = scoring.score_top1(pred, torch.tensor([r['gt'] for r in results]))
            out[f'top{k}'] = sc.accuracy
        return out
