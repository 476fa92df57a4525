# Runtime of the detection configs: mmdet's scope, our modules imported. Hooks and the log processor
# follow the training loop, so they are in the schedules.
default_scope = 'mmdet'
# internvit_dense.engine first: it defers mmengine.optim's import of transformers and peft (seconds) and
# guards DeepSpeed's; the models, loaded first, would import mmengine.optim before it could.
custom_imports = dict(imports=['internvit_dense.engine', 'internvit_dense.models', 'internvit_dense.datasets'],
                      allow_failed_imports=False)
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='nccl'))
vis_backends = [dict(type='LocalVisBackend'), dict(type='TensorboardVisBackend')]
visualizer = dict(type='DetLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_level = 'INFO'
load_from = None
resume = False
