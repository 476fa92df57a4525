"""A grid of linear probes (learning rates x features) trained together in one pass over cached features.

Every classifier of the grid is the recipe's head without the BatchNorm's scale and shift
(which a linear layer after it absorbs: the same functions): BatchNorm (eps 1e-6) on its feature, then a linear layer initialised N(0, 0.01), trained with
SGD (momentum 0.9, Nesterov, no weight decay), linear warm-up then cosine decay. The
grid is exactly that many independent classifiers; what they share is work:

* each cached array (cls / mean-patch of one block) is read, converted and
  batch-normalised once per batch. BatchNorm is per dimension, so normalising the
  pieces equals normalising their concatenation, and its statistics do not depend on
  the classifier;
* the classifiers of one feature (one per learning rate) are one weight tensor
  (D, L, K): one GEMM computes all their logits, one GEMM all their gradients;
* one ``torch.optim.SGD`` steps them all, its learning rate driven by torch's schedulers
  (linear warm-up, then cosine to 0, as DINOv2's linear evaluation). Each classifier's
  own learning rate is a weight on its loss: SGD without weight decay is linear in the
  gradient (momentum buffers included), so a loss scaled by ``lr_j`` under a learning
  rate ``eta`` takes exactly the steps of the unscaled loss under ``lr_j * eta``.

Each classifier's loss is its own batch mean, so the gradient every classifier sees is
the one it would see alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import scoring
from .cache import Key, SplitFeatures

PRECISIONS = ('fp32', 'bf16')
BASE_BATCH = 512  # the recipe's learning rates are per 512 images, scaled linearly with the batch
DEFAULT_LRS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


@dataclass(frozen=True)
class FeatureSpec:
    """cls tokens of the last ``n_last`` cached blocks, plus (``avgpool``) the last block's mean patch token."""
    n_last: int
    avgpool: bool

    @property
    def name(self) -> str:
        return f'last{self.n_last}' + ('+avgpool' if self.avgpool else '')

    def keys(self, blocks: Sequence[int]) -> List[Key]:
        if self.n_last > len(blocks):
            raise ValueError(f'{self.name} needs {self.n_last} blocks; the cache has {len(blocks)}: {list(blocks)}')
        keys: List[Key] = [('cls', b) for b in blocks[-self.n_last:]]
        return keys + [('patch', blocks[-1])] if self.avgpool else keys

    @classmethod
    def parse(cls, name: str) -> 'FeatureSpec':
        base, _, pool = name.partition('+')
        if not base.startswith('last') or not base[4:].isdigit() or pool not in ('', 'avgpool'):
            raise ValueError(f"feature spec must look like 'last4' or 'last1+avgpool', got {name!r}")
        return cls(int(base[4:]), pool == 'avgpool')


RECIPE_SPEC = FeatureSpec(1, True)  # InternVL: [cls || mean patch] of the last block


def make_specs(n_lasts: Sequence[int] = (1, 4), avgpool: Sequence[bool] = (False, True)) -> List[FeatureSpec]:
    return [FeatureSpec(n, p) for n in n_lasts for p in avgpool]


def make_optimizer(grid: 'LinearGrid', batch_size: int, momentum: float = 0.9,
                   nesterov: bool = True) -> torch.optim.SGD:
    """SGD over every classifier of ``grid``, no weight decay; the base learning rate is the recipe's
    linear scaling ``batch_size / 512`` (each classifier's own rate is its loss weight, see :meth:`LinearGrid.loss`)."""
    return torch.optim.SGD(list(grid.weights) + list(grid.biases), lr=batch_size / BASE_BATCH, momentum=momentum,
                           nesterov=nesterov, weight_decay=0.0)


def make_scheduler(optimizer: torch.optim.Optimizer, total: int, warmup: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Per optimizer step: linear warm-up to the base rate over ``warmup`` steps (``(it + 1) / warmup``),
    then cosine to 0 at ``total``."""
    from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

    cosine = CosineAnnealingLR(optimizer, T_max=max(total - warmup, 1), eta_min=0.0)
    if warmup <= 1:  # a one-step warm-up at the full rate is no warm-up
        return cosine
    linear = LinearLR(optimizer, start_factor=1.0 / warmup, end_factor=1.0, total_iters=warmup - 1)
    return SequentialLR(optimizer, [linear, cosine], milestones=[warmup])


class LinearGrid(nn.Module):
    """``len(specs) x len(lrs)`` linear probes; see the module docstring.

    ``lrs`` are the recipe's per-512-image learning rates; :meth:`step` scales them by the batch.
    """

    def __init__(self, specs: Sequence[FeatureSpec], lrs: Sequence[float], blocks: Sequence[int], dim: int,
                 num_classes: int, bn_eps: float = 1e-6, bn_momentum: float = 0.1, init_std: float = 0.01,
                 seed: int = 0, precision: str = 'fp32'):
        super().__init__()
        if precision not in PRECISIONS:
            raise ValueError(f'precision must be one of {PRECISIONS}, got {precision!r}')
        self.precision = precision
        self.specs = list(specs)
        self.lrs = [float(lr) for lr in lrs]
        self.blocks = list(blocks)
        self.dim, self.num_classes = dim, num_classes
        self.bn_eps, self.bn_momentum = bn_eps, bn_momentum
        self.spec_keys = [s.keys(self.blocks) for s in self.specs]
        self.keys: List[Key] = sorted({k for ks in self.spec_keys for k in ks}, key=lambda k: (k[1], k[0]))
        for k in self.keys:
            self.register_buffer(self._bn_name(k, 'mean'), torch.zeros(dim))
            self.register_buffer(self._bn_name(k, 'var'), torch.ones(dim))
        g = torch.Generator().manual_seed(seed)
        L = len(self.lrs)
        self.weights = nn.ParameterList([
            nn.Parameter(torch.randn(len(ks) * dim, L, num_classes, generator=g) * init_std) for ks in self.spec_keys])
        self.biases = nn.ParameterList([nn.Parameter(torch.zeros(L, num_classes)) for _ in self.specs])
        self.register_buffer('lr_vector', torch.tensor(self.lrs))

    @staticmethod
    def _bn_name(key: Key, stat: str) -> str:
        return f'bn_{key[0]}_{key[1]}_{stat}'

    def bn_stats(self, key: Key) -> Tuple[torch.Tensor, torch.Tensor]:
        return getattr(self, self._bn_name(key, 'mean')), getattr(self, self._bn_name(key, 'var'))

    @property
    def num_classifiers(self) -> int:
        return len(self.specs) * len(self.lrs)

    # ---------------------------------------------------------------- forward
    def normalise(self, arrays: Dict[Key, torch.Tensor], train: bool) -> Dict[Key, torch.Tensor]:
        out = {}
        for k in self.keys:
            x = arrays[k]
            mean_buf, var_buf = self.bn_stats(k)
            if train:
                mean, var = x.mean(dim=0), x.var(dim=0, unbiased=False)
                with torch.no_grad():  # running statistics as torch's BatchNorm keeps them (unbiased var)
                    n = x.shape[0]
                    mean_buf.lerp_(mean, self.bn_momentum)
                    var_buf.lerp_(var * n / max(n - 1, 1), self.bn_momentum)
            else:
                mean, var = mean_buf, var_buf
            out[k] = (x - mean) * torch.rsqrt(var + self.bn_eps)
        return out

    def forward(self, arrays: Dict[Key, torch.Tensor], train: bool = False) -> List[torch.Tensor]:
        """Logits (B, L, K) for each spec, L = number of learning rates."""
        z = self.normalise(arrays, train)
        logits = []
        # bf16: the GEMMs only (AMP-style); weights, BatchNorm, loss and the SGD step stay fp32.
        with torch.autocast(self.lr_vector.device.type, dtype=torch.bfloat16, enabled=self.precision == 'bf16'):
            for keys, w, b in zip(self.spec_keys, self.weights, self.biases):
                x = torch.cat([z[k] for k in keys], dim=1) if len(keys) > 1 else z[keys[0]]
                out = x @ w.view(w.shape[0], -1)
                logits.append(out.float().view(x.shape[0], *b.shape) + b)
        return logits

    # ------------------------------------------------------------------ train
    def loss(self, logits: List[torch.Tensor], labels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(sum over classifiers of ``lr_j`` x its mean cross-entropy, to backpropagate; the plain mean
        cross-entropy of every classifier (specs * lrs,), to report)."""
        per_clf = []
        for out in logits:  # (B, L, K) -> cross_entropy over K with a target per (B, L), mean over B
            L = out.shape[1]
            ce = F.cross_entropy(out.permute(0, 2, 1), labels.view(-1, 1).expand(-1, L), reduction='none')
            per_clf.append(ce.mean(dim=0))
        per_clf = torch.cat(per_clf)
        weights = self.lr_vector.repeat(len(self.specs))
        return (per_clf * weights).sum(), per_clf.detach()

    # ----------------------------------------------------------------- export
    def classifier(self, spec_index: int, lr_index: int) -> 'ProbeClassifier':
        keys = self.spec_keys[spec_index]
        mean = torch.cat([self.bn_stats(k)[0] for k in keys])
        var = torch.cat([self.bn_stats(k)[1] for k in keys])
        return ProbeClassifier(
            spec=self.specs[spec_index].name, keys=list(keys), lr=self.lrs[lr_index],
            mean=mean.detach().cpu().clone(), var=var.detach().cpu().clone(), eps=self.bn_eps,
            weight=self.weights[spec_index][:, lr_index].detach().cpu().clone(),
            bias=self.biases[spec_index][lr_index].detach().cpu().clone())


@dataclass
class ProbeClassifier:
    """One trained probe: BatchNorm (running statistics) + linear layer over its cached arrays."""
    spec: str
    keys: List[Key]
    lr: float
    mean: torch.Tensor
    var: torch.Tensor
    eps: float
    weight: torch.Tensor  # (D, K)
    bias: torch.Tensor  # (K,)

    def logits(self, arrays: Dict[Key, torch.Tensor]) -> torch.Tensor:
        x = torch.cat([arrays[k] for k in self.keys], dim=1)
        x = (x - self.mean.to(x)) * torch.rsqrt(self.var.to(x) + self.eps)
        return x @ self.weight.to(x) + self.bias.to(x)

    def state(self) -> dict:
        return dict(spec=self.spec, keys=[list(k) for k in self.keys], lr=self.lr, mean=self.mean, var=self.var,
                    eps=self.eps, weight=self.weight, bias=self.bias)

    @classmethod
    def from_state(cls, state: dict) -> 'ProbeClassifier':
        return cls(**dict(state, keys=[(k[0], int(k[1])) for k in state['keys']]))


# ---------------------------------------------------------------- data passes
def feature_batches(source: SplitFeatures, images: np.ndarray, keys: Sequence[Key], batch_size: int,
                    rng: Optional[np.random.Generator] = None, super_batch: int = 8192, drop_last: bool = False,
                    device: torch.device = torch.device('cpu')
                    ) -> Iterator[Tuple[Dict[Key, torch.Tensor], torch.Tensor, np.ndarray]]:
    """(arrays, labels, image indices) batches over ``images``; shuffled, with a random view per image, if ``rng``.

    Rows are read a super-batch at a time in ascending order (sequential-ish I/O on a
    memory map that may not fit in RAM), then put back into the shuffled order.
    """
    images = np.asarray(images)
    if rng is not None:
        images = rng.permutation(images)
        views = rng.integers(source.views, size=len(images)) if source.views > 1 else None
    else:
        views = None
    rows = source.rows(images, views)
    super_batch = max(batch_size, super_batch // batch_size * batch_size)
    n = len(rows)
    if drop_last and n >= batch_size:
        n = n // batch_size * batch_size
    for start in range(0, n, super_batch):
        part = rows[start:min(start + super_batch, n)]
        order = np.argsort(part, kind='stable')
        back = np.empty_like(order)
        back[order] = np.arange(len(order))
        loaded = {k: torch.from_numpy(np.asarray(source.arrays[k][part[order]], dtype=np.float32))[back].to(device)
                  for k in keys}
        labels = torch.from_numpy(source.labels[images[start:start + len(part)]]).to(device)
        for i in range(0, len(part), batch_size):
            sl = slice(i, i + batch_size)
            yield {k: v[sl] for k, v in loaded.items()}, labels[sl], images[start + i:start + i + batch_size]


def train_grid(grid: LinearGrid, source: SplitFeatures, images: np.ndarray, steps: int, warmup_steps: int = 0,
               batch_size: int = 1024, momentum: float = 0.9, nesterov: bool = True, seed: int = 0,
               super_batch: int = 8192, progress: bool = True, desc: str = 'sweep') -> List[float]:
    """Trains every classifier of ``grid`` on ``images`` of ``source`` for ``steps`` optimizer steps (epochs of
    ``len(images) // batch_size`` steps, reshuffled each epoch, the last one cut short); returns the mean loss
    per epoch."""
    device = grid.lr_vector.device
    bs = min(batch_size, len(images))
    optimizer = make_optimizer(grid, bs, momentum, nesterov)
    scheduler = make_scheduler(optimizer, steps, warmup_steps)
    rng = np.random.default_rng(seed)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=steps, desc=f'{desc}: {grid.num_classifiers} classifiers', unit='it', dynamic_ncols=True)
    history, it, epoch = [], 0, 0
    while it < steps:
        losses = []
        for arrays, labels, _ in feature_batches(source, images, grid.keys, bs, rng, super_batch, True, device):
            weighted, per_clf = grid.loss(grid(arrays, train=True), labels)
            optimizer.zero_grad(set_to_none=True)
            weighted.backward()
            optimizer.step()
            scheduler.step()
            losses.append(per_clf.mean().item())
            it += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f'{losses[-1]:.3f}')
            if it == steps:
                break
        epoch += 1
        history.append(float(np.mean(losses)) if losses else float('nan'))
    if bar is not None:
        bar.close()
    return history


@torch.no_grad()
def grid_logits(grid: LinearGrid, source: SplitFeatures, images: np.ndarray, batch_size: int = 4096
                ) -> Iterator[Tuple[List[torch.Tensor], torch.Tensor, np.ndarray]]:
    for arrays, labels, idx in feature_batches(source, images, grid.keys, batch_size,
                                               device=grid.lr_vector.device):
        yield grid(arrays, train=False), labels, idx


@torch.no_grad()
def evaluate_grid(grid: LinearGrid, source: SplitFeatures, images: Optional[np.ndarray] = None, rule: str = 'top1',
                  subset: Optional[Sequence[int]] = None, real_labels: Optional[Sequence[Sequence[int]]] = None,
                  batch_size: int = 4096) -> np.ndarray:
    """Top-1 accuracy (%) of every classifier, shape (specs, lrs)."""
    images = np.arange(source.num_images) if images is None else images
    correct = np.zeros((len(grid.specs), len(grid.lrs)))
    total = 0
    for logits, labels, idx in grid_logits(grid, source, images, batch_size):
        batch_real = [real_labels[i] for i in idx] if real_labels is not None else None
        for s, out in enumerate(logits):
            for j in range(out.shape[1]):
                sc = scoring.score(out[:, j], rule, labels, subset, batch_real)
                correct[s, j] += sc.correct
        total += sc.total
    return 100.0 * correct / max(total, 1)


@torch.no_grad()
def classifier_logits(clf: ProbeClassifier, source: SplitFeatures, batch_size: int = 4096,
                      device: torch.device = torch.device('cpu')) -> Tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels of every image (view 0) of ``source``."""
    outs, labels = [], []
    for arrays, lab, _ in feature_batches(source, np.arange(source.num_images), clf.keys, batch_size,
                                          device=device):
        outs.append(clf.logits(arrays).cpu())
        labels.append(lab.cpu())
    return torch.cat(outs), torch.cat(labels)


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int = 0, min_per_class: int = 1
                       ) -> Tuple[np.ndarray, np.ndarray]:
    """(train, held-out) image indices: ``fraction`` of each class held out, but at least ``min_per_class``
    images of a class (never more than half of it), and never a class's last image."""
    # Not sklearn's train_test_split(stratify=...): it splits each class proportionally and cannot keep a floor.
    rng = np.random.default_rng(seed)
    train, held = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n = len(idx)
        k = max(int(round(fraction * n)), min(min_per_class, n // 2)) if n >= 2 else 0
        k = min(k, n - 1) if n >= 2 else 0
        held.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(held))
