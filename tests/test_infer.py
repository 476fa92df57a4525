"""tools/infer.py and internvit_dense.apis.init_model: a trained model on a user's own images."""
import json
import os
import shutil

import numpy as np
import pytest
import torch
from conftest import load_tool
from mmengine.logging import HistoryBuffer
from PIL import Image

from internvit_dense.apis import init_model
from internvit_dense.datasets.synthetic_ade20k import generate_synthetic_ade20k
from internvit_dense.datasets.synthetic_coco import generate_synthetic_coco

SEG = 'configs/segmentation/tiny/tiny_upernet_full_synthetic.py'
DET = 'configs/detection/tiny/tiny_adapter_mask-rcnn_fpn_synthetic.py'
pytestmark = pytest.mark.usefixtures('one_thread')


def training_checkpoint(model, path):
    """Saved as mmengine's runner saves: weights, dataset meta, and a message hub with numpy values."""
    torch.save(dict(meta=dict(dataset_meta=dict(model.dataset_meta), iter=2), state_dict=model.state_dict(),
                    message_hub=dict(log_scalars=dict(loss=HistoryBuffer([np.float64(0.5)], [1])),
                                     runtime_info=dict(iter=np.int64(2)))), path)


@pytest.fixture(scope='module')
def seg_checkpoint(tmp_path_factory):
    base = tmp_path_factory.mktemp('infer_seg')
    model = init_model(SEG)  # random weights; the config's class names
    training_checkpoint(model, base / 'iter_2.pth')
    return base / 'iter_2.pth'


def test_init_model_loads_a_training_checkpoint_strictly(seg_checkpoint, tmp_path):
    with pytest.raises(Exception, match='Weights only load failed'):  # torch >= 2.6's default, hence init_model
        torch.load(seg_checkpoint, weights_only=True)
    model = init_model(SEG, seg_checkpoint)  # a pathlib.Path too
    saved = torch.load(seg_checkpoint, weights_only=False)['state_dict']
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    assert model.dataset_meta['classes'][0] == 'wall' and not model.training
    legacy = tmp_path / 'legacy.pth'  # torch's pre-1.6 format, which cannot be memory-mapped
    torch.save(dict(state_dict=saved), legacy, _use_new_zipfile_serialization=False)
    assert torch.equal(init_model(SEG, legacy).decode_head.conv_seg.weight, saved['decode_head.conv_seg.weight'])
    with pytest.raises(RuntimeError, match='does not fit the model'):
        init_model('configs/segmentation/tiny/tiny_linear_frozen_synthetic.py', str(seg_checkpoint))
    with pytest.raises(ValueError, match="default_scope=None"):
        init_model('configs/classification/tiny/tiny_linear_probe_synthetic.py')
    (tmp_path / 'iter_4.pth').mkdir()
    with pytest.raises(IsADirectoryError, match='zero_to_fp32'):
        init_model(SEG, str(tmp_path / 'iter_4.pth'))


def test_segmentation_overlays_and_label_maps(seg_checkpoint, tmp_path, capsys):
    data = tmp_path / 'data'
    generate_synthetic_ade20k(str(data), num_train=1, num_val=3, seed=3, progress=False)
    images = data / 'images' / 'validation'
    (images / 'again').mkdir()
    shutil.copy(images / 'ADE_val_00000001.jpg', images / 'again' / 'ADE_val_00000001.jpg')  # same name twice
    out = tmp_path / 'out'
    load_tool('infer').main([SEG, str(seg_checkpoint), str(images), '--out-dir', str(out), '--quiet'])
    text = capsys.readouterr().out
    assert 'done: 4 images' in text and 'classes by share of all predicted pixels: ' in text
    sources = {'ADE_val_00000001': 'ADE_val_00000001.jpg', 'ADE_val_00000001_2': 'again/ADE_val_00000001.jpg',
               'ADE_val_00000002': 'ADE_val_00000002.jpg', 'ADE_val_00000003': 'ADE_val_00000003.jpg'}
    assert sorted(os.listdir(out)) == sorted(f'{s}_{k}.png' for s in sources for k in ('labels', 'overlay'))
    for stem, source in sources.items():
        labels = np.asarray(Image.open(out / f'{stem}_labels.png'))
        w, h = Image.open(images / source).size
        assert labels.shape == (h, w) and Image.open(out / f'{stem}_overlay.png').size == (w, h)
        assert labels.max() < 150  # ADE20K's class indices


def test_bad_inputs_say_what_is_wrong(seg_checkpoint, tmp_path):
    tool = load_tool('infer')
    with pytest.raises(SystemExit, match='not found: .*nowhere'):
        tool.main([SEG, str(seg_checkpoint), str(tmp_path / 'nowhere')])
    with pytest.raises(SystemExit, match='no images'):
        tool.main([SEG, str(seg_checkpoint), str(tmp_path)])
    Image.new('RGB', (40, 30)).save(tmp_path / 'a.png')
    with pytest.raises(SystemExit, match='does not fit the model'):
        tool.main(['configs/segmentation/tiny/tiny_linear_frozen_synthetic.py', str(seg_checkpoint),
                   str(tmp_path / 'a.png'), '--out-dir', str(tmp_path / 'out')])


def test_detection_writes_boxes_and_overlays(tmp_path, capsys):
    data = tmp_path / 'coco'
    generate_synthetic_coco(str(data), num_train=1, num_val=2, seed=1, progress=False)
    options = ['--cfg-options', f'test_dataloader.dataset.data_root={data}']
    model = init_model(DET, cfg_options={'test_dataloader.dataset.data_root': str(data)})
    training_checkpoint(model, tmp_path / 'det.pth')
    out = tmp_path / 'out'
    load_tool('infer').main([DET, str(tmp_path / 'det.pth'), str(data / 'val2017'), '--out-dir', str(out),
                             '--score-thr', '0', '--quiet', *options])
    assert 'done: 2 images' in capsys.readouterr().out
    for name in os.listdir(data / 'val2017'):
        stem = os.path.splitext(name)[0]
        boxes = json.load(open(out / f'{stem}.json'))['detections']
        assert boxes and all(b['label'] in ('ball', 'crate', 'cone', 'gem') for b in boxes)
        assert all(0 <= b['score'] <= 1 and b['bbox'][0] <= b['bbox'][2] for b in boxes)
        assert Image.open(out / f'{stem}_overlay.png').size == Image.open(data / 'val2017' / name).size
