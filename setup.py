from setuptools import find_packages, setup

setup(
    name='internvit-dense',
    version='0.1.0',
    description='InternViT-6B as an OpenMMLab backbone for dense prediction',
    packages=find_packages(include=['internvit_dense', 'internvit_dense.*']),
    python_requires='>=3.9',
    install_requires=[
        # torch 2.14.1 and torchvision 0.29.1 are a pair whose compiled ops load together.
        'torch==2.14.1',
        'torchvision==0.29.1',
        # mmseg 1.2.2 and mmdet 3.3.0 assert mmcv < 2.2.0 at import; 2.1.0 is the newest allowed.
        'mmcv==2.1.0',
        'mmengine==0.10.7',
        'mmsegmentation==1.2.2',
        'mmdet==3.3.0',
        'timm>=1.0,<1.1',
        # 0.19.7+ removed deepspeed.runtime.fp16.onebit, which mmengine 0.10.7 imports.
        'deepspeed==0.19.6',
        'safetensors',
        # checkpoints named by Hugging Face repository id (internvit_dense/checkpoint/hub.py); 0.34 has `hf download`
        'huggingface_hub>=0.34',
        # mmseg imports these without declaring them.
        'ftfy',
        'regex',
        'numpy',
        'pillow',
        'tqdm',
        'tensorboard',  # mmengine's TensorboardVisBackend
        # Not listed: panopticapi (COCO panoptic PQ; mmdet imports it). tools/setup_env.sh installs
        # panopticapi-lite==0.2.0 (cocodataset's code on PyPI) with --no-deps: its metadata pins numpy<2, and a
        # requirement here would make pip replace numpy 2 with 1.26 (docs/mask2former.md).
    ],
    extras_require={
        # pytest-xdist: tools/run_tests.sh runs the suite on one worker per core (filelock: workers share data sets)
        'dev': ['pytest', 'pytest-xdist>=3.6', 'filelock', 'transformers>=5.0', 'scikit-learn', 'peft==0.21.2'],
        'flash': ['flash-attn'],
        # HFEncoder (hf:DIR encoders in the linear probe and the configs); timm is a core dependency.
        'hf': ['transformers>=5.0'],
        # backbone=dict(lora=dict(...)): low-rank adapters through Hugging Face peft (which needs transformers and
        # accelerate); 0.21.2 is the release tested here with transformers 5 and torch 2.14.
        'lora': ['peft==0.21.2', 'transformers>=5.0'],
    },
)
