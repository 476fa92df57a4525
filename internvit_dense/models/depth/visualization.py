"""Depth maps drawn in metres: a fixed colour scale, labelled, beside the image.

mmseg's ``SegLocalVisualizer`` draws a depth map with ``draw_featmap``: min-max normalised per map (so the ground
truth and the prediction of one image get different colours for the same depth) and stacked under the image,
with no scale. Here ground truth and prediction share one range and the scale says which colour is how many metres.
"""
from typing import Optional, Tuple

import cv2
import mmcv
import numpy as np
from mmseg.registry import VISUALIZERS
from mmseg.visualization import SegLocalVisualizer


def colour_depth(depth: np.ndarray, min_depth: float, max_depth: float) -> np.ndarray:
    """Depth (H, W) in metres -> RGB uint8: near = bright yellow, far = dark purple (magma reversed); 0 (no depth)
    is black."""
    scaled = np.clip((depth - min_depth) / max(max_depth - min_depth, 1e-6), 0, 1)
    rgb = cv2.applyColorMap(((1 - scaled) * 255).astype(np.uint8), cv2.COLORMAP_MAGMA)[..., ::-1].copy()
    rgb[depth <= 0] = 0
    return rgb


def colour_scale(height: int, min_depth: float, max_depth: float) -> np.ndarray:
    """A vertical colour bar, near at the top, labelled in metres; RGB uint8 (height, width)."""
    bar_w, label_w = max(8, height // 24), max(44, height // 5)
    ramp = np.linspace(min_depth, max_depth, height)[:, None].repeat(bar_w, 1)
    scale = np.full((height, bar_w + label_w, 3), 255, np.uint8)
    scale[:, :bar_w] = colour_depth(ramp, min_depth, max_depth)
    font = max(0.3, height / 900)
    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = int(round(frac * (height - 1)))
        cv2.putText(scale, f'{min_depth + frac * (max_depth - min_depth):.1f} m', (bar_w + 2, min(max(y + 4, 10),
                    height - 3)), cv2.FONT_HERSHEY_SIMPLEX, font, (0, 0, 0), 1, cv2.LINE_AA)
    return scale


def depth_panel(rgb: np.ndarray, depths, depth_range: Tuple[float, float]) -> np.ndarray:
    """[image | each depth map coloured | the colour scale], RGB, the height of the image."""
    h, w = rgb.shape[:2]
    coloured = [colour_depth(cv2.resize(np.asarray(d, np.float32), (w, h), interpolation=cv2.INTER_NEAREST),
                             *depth_range) for d in depths]
    return np.concatenate([rgb, *coloured, colour_scale(h, *depth_range)], axis=1)


@VISUALIZERS.register_module()
class DepthLocalVisualizer(SegLocalVisualizer):
    """``SegLocalVisualizer`` for depth samples: [image | ground truth | prediction | scale in metres].

    Args:
        depth_range: the colour scale's (min, max) in metres; default per image: the range of its valid ground
            truth (else of its prediction), shared by the ground truth and the prediction.
    """

    def __init__(self, name: str = 'visualizer', depth_range: Optional[Tuple[float, float]] = None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.depth_range = tuple(depth_range) if depth_range else None

    def add_datasample(self, name, image, data_sample=None, draw_gt=True, draw_pred=True, show=False, wait_time=0,
                       out_file=None, step=0, with_labels=True):
        if data_sample is None or not ({'gt_depth_map', 'pred_depth_map'} & set(data_sample.keys())):
            return super().add_datasample(name, image, data_sample, draw_gt, draw_pred, show, wait_time, out_file,
                                          step, with_labels)
        depths = []
        if draw_gt and 'gt_depth_map' in data_sample:
            depths.append(data_sample.gt_depth_map.data.squeeze().float().cpu().numpy())
        if draw_pred and 'pred_depth_map' in data_sample:
            depths.append(data_sample.pred_depth_map.data.squeeze().float().cpu().numpy())
        drawn = depth_panel(image, depths, self.depth_range or self._range(depths))
        if show:
            self.show(drawn, win_name=name, wait_time=wait_time)
        if out_file is not None:
            mmcv.imwrite(mmcv.rgb2bgr(drawn), out_file)
        else:
            self.add_image(name, drawn, step)

    @staticmethod
    def _range(depths) -> Tuple[float, float]:
        valid = depths[0][depths[0] > 0]
        if valid.size == 0:
            return 0.0, 1.0
        return float(valid.min()), float(valid.max())
