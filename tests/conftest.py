import importlib.util
import os

import pytest
import torch

from internvit_dense.models.backbones.internvit import ARCH_PRESETS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The tiny architectures of the two released families (the project's one definition, also used by the
# tiny configs and benchmarks); tests build these with random weights.
TINY_6B = dict(ARCH_PRESETS['tiny'])
TINY_300M = dict(ARCH_PRESETS['tiny-300m'])


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter random, cls token, position embedding and layer scale included.

    Norm weights and layer scales stay near 1 so that activations keep a sane range.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if name.endswith(('norm1.weight', 'norm2.weight', 'q_norm.weight', 'k_norm.weight', 'gamma',
                              'lambda_1', 'lambda_2', 'layernorm_before.weight', 'layernorm_after.weight')):
                p.copy_(1.0 + 0.2 * noise)
            elif name.endswith(('cls_token', 'pos_embed', 'position_embeddings')):
                p.copy_(0.5 * noise)
            else:
                p.copy_(0.05 * noise)
    return model


def tiny_vit(arch=TINY_6B, seed=0, **kwargs):
    from internvit_dense.models.backbones import InternViT
    kwargs.setdefault('patch_size', 14)
    kwargs.setdefault('pretrain_size', 56)
    kwargs.setdefault('img_size', 56)
    model = InternViT(arch=dict(arch), **kwargs)
    return randomize_(model, seed).eval()


def load_tool(name):
    """tools/<name>.py as a module, so that a test calls its main(argv) in this process."""
    spec = importlib.util.spec_from_file_location(f'tool_{name}', os.path.join(ROOT, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def one_thread():
    """For tests of small GEMMs: on a shared 2-core machine, OpenMP threads waiting on each other cost 10-40x."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture
def tmp_work(tmp_path):
    cwd = os.getcwd()
    yield tmp_path
    os.chdir(cwd)
