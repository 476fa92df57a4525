"""Resume, and bad input that must fail loudly without losing what was saved."""
import shutil

import numpy as np
import pytest
from PIL import Image
from seg_utils import TINY, data_options, load_ckpt, run_tool

SHORT = ['train_cfg.max_iters=20', 'train_cfg.val_interval=1000', 'default_hooks.checkpoint.interval=10',
         'default_hooks.checkpoint.save_best=None', 'train_dataloader.batch_size=4']


@pytest.fixture(scope='module')
def small_data(ade20k_small):
    return ade20k_small  # the test run's shared set (tests/conftest.py): read-only, damaged only in copies below


@pytest.fixture
def data_copy(small_data, tmp_path):
    root = tmp_path / 'data'
    shutil.copytree(small_data, root)
    return root


# Resuming with the optimizer's and schedulers' state (AdamW's step counts, layer-decay groups' rates): checked on
# the kill-and-resume run of tests/test_resume_exact.py::test_segmentation_killed_and_resumed_is_bit_identical.


def test_resume_without_a_checkpoint_is_an_error(small_data, tmp_path):
    proc = run_tool('train.py', TINY.format('linear_frozen'), '--work-dir', tmp_path / 'empty', '--resume',
                    *data_options(small_data, SHORT), check=False)
    assert proc.returncode != 0 and 'no checkpoint to resume from' in proc.stderr


def test_missing_data_root(tmp_path):
    proc = run_tool('train.py', TINY.format('linear_frozen'), '--work-dir', tmp_path / 'w',
                    *data_options(tmp_path / 'nowhere', SHORT), check=False)
    assert proc.returncode != 0
    assert f'{tmp_path}/nowhere/images/training does not exist' in proc.stderr


def test_corrupt_image_named(data_copy, tmp_path):
    victim = sorted((data_copy / 'images' / 'training').glob('*.jpg'))[3]
    victim.write_bytes(b'\xff\xd8 this is not a jpeg')
    proc = run_tool('train.py', TINY.format('linear_frozen'), '--work-dir', tmp_path / 'w',
                    *data_options(data_copy, SHORT), check=False)
    assert proc.returncode != 0 and f'failed to load image: {victim}' in proc.stderr


def test_label_of_the_wrong_size_named(data_copy, tmp_path):
    victim = sorted((data_copy / 'annotations' / 'training').glob('*.png'))[2]
    label = np.array(Image.open(victim))
    Image.fromarray(label[:-7]).save(victim)
    proc = run_tool('train.py', TINY.format('linear_frozen'), '--work-dir', tmp_path / 'w',
                    *data_options(data_copy, SHORT), check=False)
    assert proc.returncode != 0
    assert f'label map {victim} is {label.shape[0] - 7}x{label.shape[1]} but its image' in proc.stderr


def test_failure_after_a_checkpoint_keeps_it(data_copy, tmp_path):
    """A corrupt validation image stops the run at the first evaluation; the checkpoint saved
    just before it stays whole and resumable."""
    victim = sorted((data_copy / 'images' / 'validation').glob('*.jpg'))[1]
    victim.write_bytes(b'garbage')
    work = tmp_path / 'w'
    options = [o for o in SHORT if not o.startswith('train_cfg.val_interval')] + ['train_cfg.val_interval=10']
    proc = run_tool('train.py', TINY.format('linear_frozen'), '--work-dir', work,
                    *data_options(data_copy, options), check=False)
    assert proc.returncode != 0 and str(victim) in proc.stderr
    saved = load_ckpt(work / 'iter_10.pth')
    assert saved['meta']['iter'] == 10 and 'optimizer' in saved


def test_checkpoint_that_does_not_fit_the_config(small_data, tmp_path):
    run_tool('train.py', TINY.format('linear_frozen'), '--work-dir', tmp_path / 'lin',
             *data_options(small_data, ['train_cfg.max_iters=2', 'train_cfg.val_interval=1000',
                                        'default_hooks.checkpoint.interval=2', 'default_hooks.checkpoint.save_best=None']))
    proc = run_tool('test.py', TINY.format('upernet_full'), tmp_path / 'lin' / 'iter_2.pth',
                    '--work-dir', tmp_path / 'w', *data_options(small_data), check=False)
    assert proc.returncode != 0
    assert 'does not fit the model' in proc.stderr and 'decode_head' in proc.stderr
