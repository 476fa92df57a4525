"""ImageNet layouts, the class-index convention, the synthetic generator and the classification transforms."""
import json
import os
import re

import numpy as np
import pytest
from conftest import load_tool

from internvit_dense.datasets import imagenet
from internvit_dense.datasets.synthetic_imagenet import (IMAGENET_WNIDS_HEAD, generate_synthetic_imagenet,
                                                         read_summary)

NUM_CLASSES = 5


@pytest.fixture(scope='module')
def root(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('synthetic_imagenet'))
    generate_synthetic_imagenet(path, num_classes=NUM_CLASSES, train_per_class=4, val_per_class=8,
                                variant_per_class=2, size=(32, 48), progress=False)
    return path


def test_layouts_as_distributed(root):
    wnids = imagenet.train_wnids(root)
    assert wnids == list(IMAGENET_WNIDS_HEAD[:NUM_CLASSES]) == sorted(wnids)
    assert all(re.fullmatch(r'n\d{8}', w) for w in wnids)
    val = os.listdir(os.path.join(root, 'imagenet-1k', 'val', wnids[0]))
    assert all(re.fullmatch(r'ILSVRC2012_val_\d{8}\.JPEG', f) for f in val)
    # ImageNet-V2: one level of archive folder, class folders named by class index
    v2 = os.path.join(root, 'imagenetv2')
    (inner,) = os.listdir(v2)
    assert sorted(os.listdir(os.path.join(v2, inner)), key=int) == [str(i) for i in range(NUM_CLASSES)]
    assert imagenet.resolve_class_root(v2) == os.path.join(v2, inner)
    # Sketch: the archive's sketch/ folder is descended into as well
    assert imagenet.resolve_class_root(os.path.join(root, 'imagenet-sketch')).endswith('sketch/sketch')
    # A and R: wnid folders, a proper subset of the training classes each, plus the archive's README
    for name in ('a', 'r'):
        folder = os.path.join(root, f'imagenet-{name}')
        sub = imagenet.class_folders(folder)
        assert set(sub) < set(wnids) and 'README.txt' in os.listdir(folder)
    assert imagenet.class_folders(os.path.join(root, 'imagenet-a')) != \
        imagenet.class_folders(os.path.join(root, 'imagenet-r'))
    summary = read_summary(root)
    assert summary['counts'] == dict(train=20, val=40, v2=10, sketch=10, a=6, r=8)


def test_class_indices_follow_the_training_folders(root):
    wnids = imagenet.train_wnids(root)
    for name in ('a', 'r'):
        items = imagenet.list_split(os.path.join(root, f'imagenet-{name}'), wnids)
        # labels are positions among the training wnids, not 0..len(subset)-1
        for path, label in items:
            assert os.path.basename(os.path.dirname(path)) == wnids[label]
        assert imagenet.class_subset(items) == read_summary(root)['subsets'][name]
    v2 = imagenet.list_split(os.path.join(root, 'imagenetv2'), wnids)
    assert all(int(os.path.basename(os.path.dirname(p))) == label for p, label in v2)
    assert sorted({label for _, label in v2}) == list(range(NUM_CLASSES))
    with pytest.raises(ValueError, match='not one of'):  # a wnid the training set does not have
        imagenet.scan_class_folders(os.path.join(root, 'imagenet-a'), {wnids[0]: 0})


def test_real_json_and_flat_val_layout(root, tmp_path):
    wnids = imagenet.train_wnids(root)
    val = imagenet.list_split(os.path.join(root, 'imagenet-1k', 'val'), wnids)
    real_json = imagenet.find_real_json(root)
    sets = json.load(open(real_json))
    assert len(sets) == len(val) == 40
    real = imagenet.real_labels_for(val, real_json)
    # most keep their label; the generator also wrote empty sets and pairs
    assert sum(r == [label] for r, (_, label) in zip(real, val)) > 20
    assert any(r == [] for r in real) and any(len(r) == 2 for r in real)

    # The same set with a flat val/ and meta/val.txt: same images, same labels.
    flat = str(tmp_path / 'flat')
    generate_synthetic_imagenet(flat, num_classes=NUM_CLASSES, train_per_class=4, val_per_class=8,
                                variant_per_class=2, size=(32, 48), val_layout='flat', progress=False)
    val_dir = os.path.join(flat, 'imagenet-1k', 'val')
    assert not imagenet.class_folders(val_dir)
    flat_items = imagenet.list_split(val_dir, wnids, os.path.join(flat, 'imagenet-1k', 'meta', 'val.txt'))
    as_names = lambda items: sorted((os.path.basename(p), label) for p, label in items)  # noqa: E731
    assert as_names(flat_items) == as_names(val)
    assert all(os.path.isfile(p) for p, _ in flat_items)
    # Classes from meta/train.txt when the training folders are absent
    os.rename(os.path.join(flat, 'imagenet-1k', 'train'), os.path.join(flat, 'imagenet-1k', 'train_moved'))
    assert imagenet.train_wnids(flat) == wnids


def test_missing_data_explains_itself(tmp_path):
    with pytest.raises(FileNotFoundError, match='generate_synthetic_imagenet'):
        imagenet.train_wnids(str(tmp_path))
    with pytest.raises(FileExistsError):
        (tmp_path / 'imagenet-1k').mkdir()
        (tmp_path / 'x').write_text('not ours')
        generate_synthetic_imagenet(str(tmp_path), overwrite=True, progress=False)


def test_dataset_and_pipelines(root):
    from mmcv.transforms import Compose

    import internvit_dense.datasets.imagenet_transforms  # noqa: F401
    from internvit_dense.linear_probe.extract import eval_pipeline, train_pipeline

    packed = eval_pipeline(28) + [dict(type='PackClsInputs')]
    ds = imagenet.ImageNetFolder(data_root=root, variant='real', pipeline=packed)
    assert len(ds) == 40 and ds.metainfo['classes'] == tuple(imagenet.train_wnids(root))
    sample = ds[0]
    assert sample['inputs'].shape == (3, 28, 28) and sample['inputs'].dtype.is_floating_point is False
    assert 'real_labels' in sample['data_samples'].metainfo
    a = imagenet.ImageNetFolder(data_root=root, variant='a', pipeline=packed)
    assert a.metainfo['class_subset'] == read_summary(root)['subsets']['a']
    assert len(imagenet.ImageNetFolder(data_root=root, variant='train', pipeline=packed)) == 20
    with pytest.raises(KeyError):
        imagenet.ImageNetFolder(data_root=root, variant='imagenet-c')

    # random-resized crop: right size, reproducible under a seed, different across seeds
    rrc = Compose(train_pipeline(28))
    path = ds.get_data_info(0)['img_path']
    crops = []
    for seed in (1, 1, 2):
        np.random.seed(seed)
        crops.append(rrc(dict(img_path=path))['img'])
    assert crops[0].shape == (28, 28, 3)
    assert np.array_equal(crops[0], crops[1]) and not np.array_equal(crops[0], crops[2])


def test_resize_short_edge_and_crop_box():
    from internvit_dense.datasets.imagenet_transforms import RandomResizedCrop, ResizeShortEdge

    img = np.zeros((40, 100, 3), np.uint8)
    assert ResizeShortEdge(20).transform(dict(img=img))['img'].shape == (20, 50, 3)
    assert ResizeShortEdge(20).transform(dict(img=img.transpose(1, 0, 2)))['img'].shape == (50, 20, 3)
    np.random.seed(0)
    rrc = RandomResizedCrop(16)
    for _ in range(50):
        top, left, h, w = rrc.crop_box(40, 100)
        assert 0 <= top and top + h <= 40 and 0 <= left and left + w <= 100
        assert 0.08 * 4000 * 0.9 <= h * w <= 4000
    # when no draw fits, the fallback is a centred crop within the ratio bounds
    narrow = RandomResizedCrop(16, scale=(0.99, 1.0), ratio=(1.0, 1.0))
    assert narrow.crop_box(10, 100) == (0, 45, 10, 10)


def test_generator_cli(tmp_path, capsys):
    cli = load_tool('generate_synthetic_imagenet')
    out_root = str(tmp_path / 'cli')
    cli.main(['--root', out_root, '--num-classes', '3', '--train-per-class', '2', '--val-per-class', '2',
              '--variant-per-class', '1', '--size', '32,40', '--quiet'])
    out = capsys.readouterr().out
    assert out_root in out and 'ImageNet-A stand-in covers classes' in out
    assert read_summary(out_root)['num_classes'] == 3
    with pytest.raises(SystemExit):  # non-empty root without --overwrite
        cli.main(['--root', out_root, '--quiet'])
    assert 'not empty' in capsys.readouterr().err
    a_file = tmp_path / 'a_file'
    a_file.write_text('')
    with pytest.raises(SystemExit):
        cli.main(['--root', str(a_file), '--quiet'])
    assert 'is not a directory' in capsys.readouterr().err


def test_generator_without_variant_images(tmp_path):
    summary = generate_synthetic_imagenet(str(tmp_path / 'r'), num_classes=3, train_per_class=2, val_per_class=2,
                                          variant_per_class=0, progress=False)
    assert summary['counts'] == {'train': 6, 'val': 6}
    assert os.path.isfile(tmp_path / 'r' / 'imagenet-a' / 'README.txt')
