import importlib.util
import os
import shutil

# First: it imports torch and what the tools import, and records the warning filters that adds (seg_utils.py).
import seg_utils  # noqa: F401  isort: skip

import pytest
import torch
from filelock import FileLock

# The suite runs on pytest-xdist workers (tools/run_tests.sh: one per core, a whole test file per worker). Each
# worker and each tool it starts then computes on one thread (TOOL_THREADS == 1, set by seg_utils as it imports
# torch): two workers with two OpenMP threads each on two cores spin against each other (see `one_thread` below).
# A plain `pytest` run (no workers) keeps torch's default.

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


# ------------------------------------------------------------------ shared synthetic data sets
# One data set of each kind per test run, generated on first use and shared by every test that asks for it
# (session scope): end-to-end tests do not each generate their own. They are READ-ONLY: a test that damages
# files (empty images, bad labels) copies one first, e.g. shutil.copytree(ade20k_small, tmp_path / 'data').
# Pass the fixture's path to the tools as data_root (tests/seg_utils.py: data_options(root)).
#
#   ade20k_small  ADE20K layout, 8 training / 2 validation images, seed 1: runs that only need to run
#                 (resume, reliability, DeepSpeed, config smoke tests)
#   ade20k_learn  ADE20K layout, ADE20K_LEARN training / validation images, seed 0: runs that must learn
#                 (mIoU above chance, bf16 against fp32)
#   coco_small    COCO layout, 8 / 2 images, seed 0
#   coco_learn    COCO layout, COCO_LEARN images, seed 0: the tiny Mask R-CNN that must find the objects
ADE20K_LEARN = dict(num_train=200, num_val=12)
COCO_LEARN = dict(num_train=160, num_val=24)


def shared_across_workers(tmp_path_factory, name, make):
    """``make(root)`` once per test run, whatever the number of xdist workers: the first worker to ask makes the
    folder ``root`` and the value ``make`` returns (saved with torch.save); the others wait on its lock and read
    them. Without workers it is a plain session-scoped folder. Returns (root, value)."""
    if 'PYTEST_XDIST_WORKER' not in os.environ:
        root = tmp_path_factory.mktemp(name)
        return root, make(root)
    root = tmp_path_factory.getbasetemp().parent / name  # the workers' base folders share this parent
    done = root.with_name(name + '.value.pt')
    with FileLock(str(root) + '.lock'):
        if not done.exists():
            shutil.rmtree(root, ignore_errors=True)  # a worker that died while making it
            root.mkdir()
            value = make(root)
            torch.save(value, str(done) + '.part')
            os.replace(str(done) + '.part', done)
    return root, torch.load(done, weights_only=False)


def _ade20k(tmp_path_factory, name, **sizes):
    from internvit_dense.datasets.synthetic_ade20k import generate_synthetic_ade20k

    def make(root):
        generate_synthetic_ade20k(str(root), progress=False, overwrite=True, **sizes)
    return shared_across_workers(tmp_path_factory, name, make)[0]


def _coco(tmp_path_factory, name, **sizes):
    from internvit_dense.datasets.synthetic_coco import generate_synthetic_coco

    def make(root):
        generate_synthetic_coco(str(root), progress=False, overwrite=True, **sizes)
    return shared_across_workers(tmp_path_factory, name, make)[0]


@pytest.fixture(scope='session')
def ade20k_small(tmp_path_factory):
    return _ade20k(tmp_path_factory, 'ade20k_small', num_train=8, num_val=2, seed=1)


@pytest.fixture(scope='session')
def ade20k_learn(tmp_path_factory):
    return _ade20k(tmp_path_factory, 'ade20k_learn', seed=0, **ADE20K_LEARN)


@pytest.fixture(scope='session')
def coco_small(tmp_path_factory):
    return _coco(tmp_path_factory, 'coco_small', num_train=8, num_val=2, seed=0)


@pytest.fixture(scope='session')
def coco_learn(tmp_path_factory):
    return _coco(tmp_path_factory, 'coco_learn', seed=0, **COCO_LEARN)


# ------------------------------------------------------------------ shared training runs
# The tiny linear-probe config on a frozen 'pretrained' backbone, trained once per test run with an fp32
# backbone, and tested with overlays. Shared by the segmentation end-to-end test (it learns; the backbone stays
# bit-identical) and the bf16 test (a bf16 backbone trains as this fp32 one does).
LINEAR_FROZEN_ITERS = 50  # fp32 26.00 / bf16 25.95 mIoU measured (test_seg_e2e.py, test_bf16_training.py)


def short_schedule(iters):
    """--cfg-options that shorten a tiny segmentation config's schedule to ``iters`` iterations, with one
    evaluation and one checkpoint at the end."""
    return [f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters}',
            f'default_hooks.checkpoint.interval={iters}', 'default_hooks.checkpoint.save_best=None',
            f'param_scheduler.1.end={iters}', 'randomness.seed=0']


def linear_frozen_config(tmp_dir, pretrained, dtype='float32'):
    """The tiny linear-frozen config with ``pretrained`` (an InternViT .pth) as its backbone, held in ``dtype``."""
    config = tmp_dir / f'linear_frozen_{dtype}.py'
    config.write_text(f"_base_ = ['{ROOT}/configs/segmentation/tiny/tiny_linear_frozen_synthetic.py']\n"
                      f"model = dict(backbone=dict(dtype='{dtype}', init_cfg=dict(_delete_=True, "
                      f"type='Pretrained', checkpoint='{pretrained}')))\n")
    return config


@pytest.fixture(scope='session')
def linear_frozen_fp32_run(tmp_path_factory, ade20k_learn):
    """dict(config, pretrained, backbone (its state dict), checkpoint, test_stdout, show_dir, data, iters)."""
    from seg_utils import data_options, run_tool

    from internvit_dense.checkpoint import save_checkpoint
    from internvit_dense.models.backbones import InternViT

    def make(base):
        torch.manual_seed(0)
        vit = InternViT(arch='tiny', img_size=112, pretrain_size=112)  # the tiny configs' backbone
        save_checkpoint(vit, base / 'vit.pth')  # fp32 'pretrained' weights
        config = linear_frozen_config(base, base / 'vit.pth')
        work = base / 'work'
        run_tool('train.py', config, '--work-dir', work,
                 *data_options(ade20k_learn, short_schedule(LINEAR_FROZEN_ITERS)))
        ckpt = open(work / 'last_checkpoint').read().strip()
        proc = run_tool('test.py', config, ckpt, '--work-dir', work, '--show-dir', base / 'vis',
                        *data_options(ade20k_learn))
        return dict(config=config, pretrained=base / 'vit.pth', backbone=vit.state_dict(), checkpoint=ckpt,
                    test_stdout=proc.stdout, show_dir=base / 'vis', data=ade20k_learn, iters=LINEAR_FROZEN_ITERS)
    return shared_across_workers(tmp_path_factory, 'linear_frozen_fp32', make)[1]


# ------------------------------------------------------------------ order
# The longest test files first (pytest --durations, README.md Development): pytest-xdist hands whole files to
# whichever worker is free (tools/run_tests.sh: --dist loadfile --no-loadscope-reorder), so starting the long
# ones early keeps both cores busy to the end. Files not named here follow in pytest's order.
LONGEST_FIRST = [  # the order of the faster of two fresh-clone runs (23.4 min; by per-file sums instead: 25.0)
    'test_seg_e2e.py', 'test_det_e2e.py', 'test_resume_exact.py', 'test_lora_e2e.py', 'test_bf16_training.py',
    'test_mask2former_panoptic.py', 'test_deepspeed.py', 'test_mask2former.py', 'test_reliability.py',
    'test_reliability_round2.py', 'test_encoder_seg_configs.py', 'test_convert_tool.py',
]


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: pytest's order within a rank
