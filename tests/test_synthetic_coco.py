"""The synthetic COCO-format generator: real COCO JSON, masks that match boxes and pixels, determinism."""
import json
import os

import numpy as np
import pytest
from conftest import load_tool
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from internvit_dense.datasets import synthetic_coco as syn
from internvit_dense.datasets.synthetic_coco import CLASS_NAMES, generate_synthetic_coco, is_complete, read_summary

NUM = {'train': 30, 'val': 10}


@pytest.fixture(scope='module')
def root(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('synthetic_coco'))
    generate_synthetic_coco(path, num_train=NUM['train'], num_val=NUM['val'], seed=0, progress=False)
    return path


def coco(root, split):
    return COCO(os.path.join(root, syn.SPLITS[split][1]))


def test_layout(root):
    assert sorted(os.listdir(root)) == ['.complete', '.synthetic_coco', 'annotations', 'train2017', 'val2017']
    assert sorted(os.listdir(os.path.join(root, 'annotations'))) == [
        'instances_train2017.json', 'instances_val2017.json', 'panoptic_train2017', 'panoptic_train2017.json',
        'panoptic_val2017', 'panoptic_val2017.json']
    for split, (folder, _, first_id) in syn.SPLITS.items():
        files = sorted(os.listdir(os.path.join(root, folder)))
        assert files == [f'{first_id + i:012d}.jpg' for i in range(NUM[split])]
        pngs = sorted(os.listdir(os.path.join(root, syn.PANOPTIC[split][1])))
        assert pngs == [f.replace('.jpg', '.png') for f in files]
    assert is_complete(root)
    assert read_summary(root)['classes'] == list(CLASS_NAMES)


@pytest.mark.parametrize('split', ['train', 'val'])
def test_coco_json_is_valid(root, split):
    with open(os.path.join(root, syn.SPLITS[split][1])) as f:
        raw = json.load(f)
    assert {'info', 'licenses', 'images', 'annotations', 'categories'} <= set(raw)
    api = coco(root, split)
    assert [c['name'] for c in api.loadCats(api.getCatIds())] == list(CLASS_NAMES)
    assert all(set(c) == {'id', 'name', 'supercategory'} for c in raw['categories'])
    assert len(api.getImgIds()) == NUM[split]
    ann_ids = [a['id'] for a in raw['annotations']]
    assert len(set(ann_ids)) == len(ann_ids)
    per_image = [len(api.getAnnIds(imgIds=i)) for i in api.getImgIds()]
    assert min(per_image) >= 1 and max(per_image) <= syn.OBJECTS_PER_IMAGE[1]
    for img in api.loadImgs(api.getImgIds()):
        assert set(img) >= {'id', 'file_name', 'height', 'width'}
        with Image.open(os.path.join(root, syn.SPLITS[split][0], img['file_name'])) as im:
            assert im.format == 'JPEG' and im.mode == 'RGB' and im.size == (img['width'], img['height'])
    # the evaluation side of pycocotools takes it too: ground truth scored as a detection gives AP 1
    if split == 'val':
        from pycocotools.cocoeval import COCOeval
        dets = [dict(image_id=a['image_id'], category_id=a['category_id'], bbox=a['bbox'], score=1.0)
                for a in raw['annotations']]
        ev = COCOeval(api, api.loadRes(dets), 'bbox')
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        assert ev.stats[0] == pytest.approx(1.0)


def test_masks_boxes_areas_and_pixels_agree(root):
    api = coco(root, 'train')
    seen = set()
    for img in api.loadImgs(api.getImgIds()):
        pixels = np.asarray(Image.open(os.path.join(root, 'train2017', img['file_name'])), dtype=np.float32)
        taken = np.zeros((img['height'], img['width']), dtype=bool)
        for ann in api.loadAnns(api.getAnnIds(imgIds=img['id'])):
            assert ann['iscrowd'] == 0 and len(ann['segmentation']) == 1 and len(ann['segmentation'][0]) >= 6
            mask = api.annToMask(ann).astype(bool)
            assert mask.sum() == ann['area'] >= 64
            x, y, w, h = ann['bbox']
            assert 0 <= x and 0 <= y and x + w <= img['width'] and y + h <= img['height']
            ys, xs = np.nonzero(mask)
            # pixel (i, j) covers [j, j+1) x [i, i+1): a mask pixel lies on the box, up to the pixel it touches
            assert xs.min() >= np.floor(x) and xs.max() <= np.ceil(x + w)
            assert ys.min() >= np.floor(y) and ys.max() <= np.ceil(y + h)
            # the box is tight: the mask reaches each side, up to the sliver of a sharp corner that covers no
            # pixel centre
            slack = 4
            assert xs.min() <= x + slack and xs.max() >= x + w - slack and ys.min() <= y + slack
            assert ys.max() >= y + h - slack
            assert not (taken & mask).any(), 'objects overlap'
            taken |= mask
            # the object is painted where its mask is: saturated colour against a greyish wall
            rgb = pixels[mask]
            saturation = (rgb.max(1) - rgb.min(1)) / np.maximum(rgb.max(1), 1)
            assert np.median(saturation) > 0.3
            seen.add(ann['category_id'])
    assert seen == {c['id'] for c in syn.CATEGORIES}


def test_polygon_and_rle_area_match():
    # area is the pixel count of the rasterised polygon, as COCO's own annotations count it
    rng = np.random.default_rng(3)
    _, objects, _, _ = syn.render_sample(rng, 128, 128, np.random.default_rng(4))
    for obj in objects:
        rle = mask_utils.merge(mask_utils.frPyObjects(obj['segmentation'], 128, 128))
        assert int(mask_utils.area(rle)) == obj['area']


def test_deterministic(tmp_path):
    def files(path):
        return {os.path.relpath(os.path.join(d, f), path): open(os.path.join(d, f), 'rb').read()
                for d, _, fs in os.walk(path) for f in fs if f.endswith(('.jpg', '.png'))}

    def anns(path, split='train'):
        with open(os.path.join(path, syn.SPLITS[split][1])) as f:
            return json.load(f)['annotations']

    a, b, c, d = (str(tmp_path / n) for n in 'abcd')
    for path, seed, n in ((a, 7, 5), (b, 7, 5), (c, 8, 5), (d, 7, 2)):
        generate_synthetic_coco(path, num_train=n, num_val=2, seed=seed, progress=False)
    assert files(a) == files(b) and anns(a) == anns(b)
    assert files(a) != files(c)
    # image i of a split depends on (seed, split, i) only, not on the size of the set
    fd = files(d)
    assert len(fd) == 8 and all(fd[k] == files(a)[k] for k in fd)
    assert anns(d) == [x for x in anns(a) if x['image_id'] <= 2]


def test_refuses_non_empty_root_and_overwrites_only_its_own(tmp_path):
    root = tmp_path / 'out'
    root.mkdir()
    (root / 'notes.txt').write_text('keep me')
    with pytest.raises(FileExistsError, match='not empty'):
        generate_synthetic_coco(str(root), num_train=2, num_val=1, progress=False)
    generate_synthetic_coco(str(root), num_train=4, num_val=2, progress=False, overwrite=True)
    with pytest.raises(FileExistsError, match='not empty'):  # a finished set is not clobbered either
        generate_synthetic_coco(str(root), num_train=2, num_val=1, progress=False)
    # a smaller set replaces a bigger one completely; unrelated files survive
    generate_synthetic_coco(str(root), num_train=2, num_val=1, progress=False, overwrite=True)
    assert len(os.listdir(root / 'train2017')) == 2 and is_complete(str(root))
    assert (root / 'notes.txt').read_text() == 'keep me'

    # e.g. the real COCO given as root by mistake
    real = tmp_path / 'coco'
    (real / 'train2017').mkdir(parents=True)
    (real / 'train2017' / '000000000009.jpg').write_bytes(b'precious')
    with pytest.raises(FileExistsError, match='did not write'):
        generate_synthetic_coco(str(real), num_train=2, num_val=1, progress=False, overwrite=True)
    assert (real / 'train2017' / '000000000009.jpg').read_bytes() == b'precious'


def test_is_complete(tmp_path, monkeypatch):
    root = str(tmp_path / 'set')
    assert not is_complete(root)
    generate_synthetic_coco(root, num_train=4, num_val=2, progress=False)
    assert is_complete(root)
    os.remove(os.path.join(root, 'val2017', '000001000001.jpg'))
    assert not is_complete(root)

    # an interrupted rewrite must not leave the old marker behind
    calls = []
    real = syn.render_sample

    def dies_after_three(*args, **kwargs):
        calls.append(1)
        if len(calls) > 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(syn, 'render_sample', dies_after_three)
    with pytest.raises(KeyboardInterrupt):
        generate_synthetic_coco(root, num_train=4, num_val=2, progress=False, overwrite=True)
    assert not is_complete(root) and read_summary(root) is None


def test_mmdet_coco_dataset_reads_it(root):
    from mmdet.datasets import CocoDataset
    from mmdet.utils import register_all_modules
    register_all_modules()
    ds = CocoDataset(data_root=root, ann_file='annotations/instances_val2017.json', data_prefix=dict(img='val2017/'),
                     metainfo=dict(classes=CLASS_NAMES),
                     pipeline=[dict(type='LoadImageFromFile'),
                               dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
                               dict(type='PackDetInputs')])
    assert len(ds) == NUM['val']
    labels = set()
    for i in range(len(ds)):
        gt = ds[i]['data_samples'].gt_instances
        assert len(gt) >= 1 and gt.masks.masks.shape[-2:] == ds[i]['inputs'].shape[-2:]
        labels |= set(gt.labels.tolist())
    assert labels <= set(range(len(CLASS_NAMES)))


def test_checked_coco_dataset_names_an_empty_image(tmp_path):
    import shutil

    from internvit_dense.datasets import CheckedCocoDataset
    path = str(tmp_path / 'coco')
    generate_synthetic_coco(path, num_train=2, num_val=3, seed=0, progress=False)
    kwargs = dict(data_root=path, ann_file='annotations/instances_val2017.json', data_prefix=dict(img='val2017/'),
                  metainfo=dict(classes=CLASS_NAMES), pipeline=[])
    assert len(CheckedCocoDataset(**kwargs)) == 3
    victim = sorted(os.listdir(os.path.join(path, 'val2017')))[1]
    open(os.path.join(path, 'val2017', victim), 'w').close()  # an interrupted copy
    with pytest.raises(ValueError, match=rf'1 empty \(0-byte\) files in .*val2017.*: .*{victim}'):
        CheckedCocoDataset(**kwargs)
    shutil.rmtree(path)


def test_cli(tmp_path, capsys):
    cli = load_tool('generate_synthetic_coco')
    root = str(tmp_path / 'cli')
    cli.main(['--root', root, '--num-train', '3', '--num-val', '2', '--seed', '1', '--quiet'])
    out = capsys.readouterr().out
    assert root in out and 'crate' in out and 'instances_val2017.json' in out and 'panoptic_val2017.json' in out
    assert is_complete(root)
    with pytest.raises(SystemExit):  # non-empty root without --overwrite
        cli.main(['--root', root, '--quiet'])
    assert 'not empty' in capsys.readouterr().err
    a_file = tmp_path / 'a_file'
    a_file.write_text('')
    with pytest.raises(SystemExit):  # a usage error, not a traceback
        cli.main(['--root', str(a_file), '--quiet'])
    assert 'is not a directory' in capsys.readouterr().err


# ------------------------------------------------------------------ the panoptic layout of the same images


@pytest.mark.parametrize('split', ['train', 'val'])
def test_panoptic_layout_agrees_with_the_instances_and_every_pixel(root, split):
    from panopticapi.utils import rgb2id
    with open(os.path.join(root, syn.PANOPTIC[split][0])) as f:
        panoptic = json.load(f)
    with open(os.path.join(root, syn.SPLITS[split][1])) as f:
        instances = json.load(f)
    assert panoptic['images'] == instances['images']
    cats = {c['id']: c for c in panoptic['categories']}
    assert [c['name'] for c in panoptic['categories']] == list(syn.PANOPTIC_CLASSES)  # things first, as mmdet needs
    assert [c['isthing'] for c in panoptic['categories']] == [1] * 4 + [0] * 3
    api = coco(root, split)
    images = {img['id']: img for img in panoptic['images']}
    stuff_seen = set()
    for ann in panoptic['annotations']:
        img = images[ann['image_id']]
        assert ann['file_name'] == img['file_name'].replace('.jpg', '.png')
        with Image.open(os.path.join(root, syn.PANOPTIC[split][1], ann['file_name'])) as im:
            assert im.mode == 'RGB' and im.size == (img['width'], img['height'])
            ids = rgb2id(np.asarray(im, dtype=np.uint32))
        # every pixel is in exactly one listed segment (no VOID), with its area and box
        assert sorted(np.unique(ids).tolist()) == sorted(s['id'] for s in ann['segments_info'])
        for seg in ann['segments_info']:
            mask = ids == seg['id']
            ys, xs = np.nonzero(mask)
            assert seg['area'] == mask.sum() and seg['iscrowd'] == 0
            assert seg['bbox'] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            if cats[seg['category_id']]['isthing']:
                # the thing is the instance annotation's object, pixel for pixel
                inst = api.loadAnns(ann['image_id'] * 100 + seg['id'] - 1)[0]
                assert inst['category_id'] == seg['category_id']
                assert np.array_equal(api.annToMask(inst).astype(bool), mask)
            else:
                stuff_seen.add(cats[seg['category_id']]['name'])
        things = [s for s in ann['segments_info'] if cats[s['category_id']]['isthing']]
        assert len(things) == len(api.getAnnIds(imgIds=ann['image_id']))
    assert stuff_seen == set(syn.STUFF_NAMES)


def test_panopticapi_scores_the_ground_truth_against_itself_pq_1(root, capsys):
    from panopticapi.evaluation import pq_compute
    gt_json, gt_folder = (os.path.join(root, p) for p in syn.PANOPTIC['train'])
    result = pq_compute(gt_json, gt_json, gt_folder, gt_folder)
    for name, n in (('All', 7), ('Things', 4), ('Stuff', 3)):
        assert result[name]['pq'] == pytest.approx(1.0) and result[name]['n'] == n


def test_mmdet_coco_panoptic_dataset_reads_it(root):
    from mmdet.datasets import CocoPanopticDataset
    from mmdet.utils import register_all_modules
    register_all_modules()
    ds = CocoPanopticDataset(
        data_root=root, ann_file=syn.PANOPTIC['val'][0], test_mode=True,
        data_prefix=dict(img='val2017/', seg=syn.PANOPTIC['val'][1] + '/'),
        metainfo=dict(classes=syn.PANOPTIC_CLASSES, thing_classes=CLASS_NAMES, stuff_classes=syn.STUFF_NAMES),
        pipeline=[dict(type='LoadImageFromFile'),
                  dict(type='LoadPanopticAnnotations', with_bbox=True, with_mask=True, with_seg=True),
                  dict(type='PackDetInputs')])
    assert len(ds) == NUM['val']
    api = coco(root, 'val')
    for i in range(len(ds)):
        sample = ds[i]['data_samples']
        gt, sem = sample.gt_instances, sample.gt_sem_seg.sem_seg[0].numpy()
        # the things, as many as the image's instances; stuff labels after the 4 things; no VOID (255)
        assert len(gt) == len(api.getAnnIds(imgIds=sample.img_id)) and set(gt.labels.tolist()) <= set(range(4))
        assert set(np.unique(sem).tolist()) <= set(range(7)) and (sem >= 4).any()
        for mask, label in zip(gt.masks.masks, gt.labels.tolist()):
            assert (sem[mask.astype(bool)] == label).all()
