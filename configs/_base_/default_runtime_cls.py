# Runtime for classification (linear probing): mmengine's root registries, no OpenMMLab task scope.
default_scope = None
# internvit_dense.engine first: it defers mmengine.optim's import of transformers and peft (seconds) and
# guards DeepSpeed's; the models, loaded first, would import mmengine.optim before it could.
custom_imports = dict(imports=['internvit_dense.engine', 'internvit_dense.models', 'internvit_dense.datasets.imagenet',
                               'internvit_dense.datasets.imagenet_transforms', 'internvit_dense.linear_probe.metric'],
                      allow_failed_imports=False)
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='nccl'))
vis_backends = [dict(type='LocalVisBackend'), dict(type='TensorboardVisBackend')]
visualizer = dict(type='Visualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=True)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0)
