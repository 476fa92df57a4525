"""The gradient-matching loss of DINOv2's DPT depth evaluation (MegaDepth's, as DINOv2's ``GradientLoss``).

On the log-depth error ``e = log(pred + eps) - log(gt + eps)`` over the valid pixels (gt > 0), it sums the
absolute differences of ``e`` between pixels two apart, vertically and horizontally (both pixels valid),
divided by the number of valid pixels, at 4 scales (every pixel; every 2nd, 4th, 6th row and column), and adds
the scales. A prediction that is the ground truth times a constant has zero loss: it penalises wrong relative
structure (edges, slopes), which SiLog, a per-pixel loss, sees only weakly.

Restated per image on (B, 1, H, W) tensors: DINOv2's code subsamples ``input[::2 * i, ::2 * i]`` on a 4-D
tensor, i.e. the batch and channel axes, so its coarser scales are not the coarser images they are meant to be.
"""
import torch
import torch.nn as nn
from torch import Tensor

from ..registry import SEG_MODELS


@SEG_MODELS.register_module()
class GradientMatchingLoss(nn.Module):
    """Multi-scale gradient matching of the log-depth error; ground truth 0 is invalid and skipped.

    Args:
        scales: number of scales (DINOv2: 4; scale ``i > 0`` keeps every ``2 i``-th row and column).
        loss_weight: multiplies the loss.
        eps: added inside the logs (DINOv2: 1e-3).
        loss_name: the key in the losses dict (``loss_`` prefix: it is backpropagated).
    """

    def __init__(self, scales: int = 4, loss_weight: float = 0.5, eps: float = 1e-3, loss_name: str = 'loss_grad'):
        super().__init__()
        if scales < 1:
            raise ValueError(f'scales must be >= 1, got {scales}')
        self.scales, self.loss_weight, self.eps, self._loss_name = scales, loss_weight, eps, loss_name

    @property
    def loss_name(self) -> str:
        return self._loss_name

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        if pred.shape != target.shape:
            raise ValueError(f'pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape')
        total = pred.new_zeros(())
        for i in range(self.scales):
            step = max(1, 2 * i)
            p, t = pred[..., ::step, ::step], target[..., ::step, ::step]
            valid = (t > 0).to(p.dtype)
            n = valid.sum().clamp(min=1)  # no valid pixel: 0 / 1, and no value read (memory plans trace this)
            # where, not a product with the mask: log(0) at an invalid pixel times 0 would be NaN
            err = torch.where(t > 0, torch.log(p + self.eps) - torch.log(t.clamp(min=1e-12) + self.eps), 0 * p)
            v = (err[..., :-2, :] - err[..., 2:, :]).abs() * valid[..., :-2, :] * valid[..., 2:, :]
            h = (err[..., :, :-2] - err[..., :, 2:]).abs() * valid[..., :, :-2] * valid[..., :, 2:]
            total = total + (v.sum() + h.sum()) / n
        return self.loss_weight * total
