# default_runtime.py for depth: the visualizer draws [image | ground truth | prediction | colour scale in metres]
# (DepthLocalVisualizer; mmseg's normalises each map on its own), flip TTA averages depth maps (DepthTTAModel).
_base_ = ['./default_runtime.py']
visualizer = dict(_delete_=True, type='DepthLocalVisualizer', vis_backends={{_base_.vis_backends}},
                  name='visualizer')
tta_model = dict(_delete_=True, type='DepthTTAModel')
