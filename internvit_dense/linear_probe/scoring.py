"""How each ImageNet variant is scored, on logits over the 1000 ImageNet-1k classes.

* ``top1`` (IN-1k val, V2, Sketch): the arg-max is the label.
* ``subset`` (IN-A, IN-R): these sets cover 200 of the 1000 classes, and their protocol
  restricts the prediction to those 200; a classifier is not penalised for choosing one
  of the 800 classes the set can never contain.
* ``real`` (ImageNet-ReaL): the prediction counts as correct if it is anywhere in the
  image's ReaL label set; images whose set is empty are left out of the denominator.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

RULES = ('top1', 'subset', 'real')


@dataclass
class Score:
    correct: int
    total: int  # images that count (ReaL: those with a label set)
    skipped: int = 0  # images left out (ReaL: empty label sets)

    @property
    def accuracy(self) -> float:
        """Top-1 in percent (nan if no image counts)."""
        return 100.0 * self.correct / self.total if self.total else float('nan')


def restrict(logits: torch.Tensor, subset: Sequence[int]) -> torch.Tensor:
    """Logits with every class outside ``subset`` at -inf (indices keep their 1000-class meaning)."""
    keep = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
    keep[torch.as_tensor(list(subset), dtype=torch.long, device=logits.device)] = True
    return logits.masked_fill(~keep, float('-inf'))


def predict(logits: torch.Tensor, rule: str = 'top1', subset: Optional[Sequence[int]] = None, k: int = 1):
    """Top-``k`` class indices (N, k) under ``rule``."""
    if rule not in RULES:
        raise ValueError(f'rule must be one of {RULES}, got {rule!r}')
    if rule == 'subset':
        if not subset:
            raise ValueError("rule 'subset' needs the set's class subset")
        logits = restrict(logits, subset)
        k = min(k, len(subset))
    return logits.topk(k, dim=-1).indices


def score_top1(pred: torch.Tensor, labels: torch.Tensor) -> Score:
    """``pred`` (N,) or (N, k): correct if the label is among the k."""
    pred = pred.view(pred.shape[0], -1)
    return Score(int((pred == labels.view(-1, 1)).any(dim=1).sum()), int(labels.numel()))


def score_real(pred: torch.Tensor, real_labels: Sequence[Sequence[int]]) -> Score:
    """``pred`` (N,) or (N, k) against ReaL label sets; empty sets are skipped."""
    pred = pred.view(pred.shape[0], -1).tolist()
    if len(pred) != len(real_labels):
        raise ValueError(f'{len(pred)} predictions for {len(real_labels)} ReaL label sets')
    correct = total = 0
    for p, labels in zip(pred, real_labels):
        if not labels:
            continue
        total += 1
        correct += bool(set(p) & set(labels))
    return Score(correct, total, len(pred) - total)


def score(logits: torch.Tensor, rule: str, labels: Optional[torch.Tensor] = None,
          subset: Optional[Sequence[int]] = None, real_labels: Optional[Sequence[Sequence[int]]] = None,
          k: int = 1) -> Score:
    """Top-``k`` accuracy of ``logits`` (N, num_classes) under a variant's rule."""
    pred = predict(logits, rule, subset, k)
    if rule == 'real':
        if real_labels is None:
            raise ValueError("rule 'real' needs real_labels")
        return score_real(pred, real_labels)
    return score_top1(pred, labels)
