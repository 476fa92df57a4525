"""ImageNet-1k and its evaluation variants as lists of (image, class index).

One convention holds everywhere (the feature cache, the classifier, the scores):
**class index = position of the wnid in the sorted list of ImageNet-1k train
folders** (``n01440764`` is 0). It is the order of the usual ``meta/*.txt``
annotation files too, and no wnid list has to be downloaded.

Layouts, relative to one data root (each can be pointed elsewhere)::

    imagenet-1k/train/<wnid>/*.JPEG          or imagenet-1k/meta/train.txt ("n0../x.JPEG 0")
    imagenet-1k/val/<wnid>/*.JPEG            or flat val/*.JPEG + imagenet-1k/meta/val.txt
    imagenet-1k/real.json                    ImageNet-ReaL: one label list per val image, in
                                             ILSVRC2012_val_00000001.JPEG, ...02 ... order
    imagenetv2/<anything>/<0..999>/*.jpeg    folders named by class index, as distributed
    imagenet-sketch/[sketch/]<wnid>/*.JPEG
    imagenet-a/<wnid>/*.jpg                  200 of the 1000 wnids
    imagenet-r/<wnid>/*.jpg                  another 200

A folder holding a single subfolder and no images is descended into, so the
archives' own top-level folders (``sketch/``, ``ImageNetV2-matched-frequency/``)
need no extra configuration.
"""
from __future__ import annotations

import json
import os
import os.path as osp
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from mmengine.dataset import BaseDataset
from mmengine.registry import DATASETS

IMG_EXTENSIONS = ('.jpeg', '.jpg', '.png', '.bmp', '.webp')
WNID_RE = re.compile(r'^n\d{8}$')
VAL_NUMBER_RE = re.compile(r'ILSVRC2012_val_(\d+)')

DATA_HELP = ('see internvit_dense/datasets/imagenet.py for the layouts, or write the small synthetic set: '
             'python tools/generate_synthetic_imagenet.py --root DIR')


@dataclass(frozen=True)
class Variant:
    """An evaluation set, where it lives by default and how it is scored
    (see :mod:`internvit_dense.linear_probe.scoring`).

    ``rule``: ``top1`` over all classes; ``subset``: logits restricted to the classes the
    set contains (ImageNet-A/-R); ``real``: correct if the prediction is in the image's
    ReaL label set, images without labels skipped.
    """
    name: str
    title: str
    path: str  # default folder, relative to the data root
    rule: str
    ann_file: Optional[str] = None  # used when ``path`` has no class folders
    paper_6b: Optional[float] = None  # InternViT-6B linear probe in the InternVL paper (top-1 %)


TRAIN_PATH, TRAIN_ANN = 'imagenet-1k/train', 'imagenet-1k/meta/train.txt'
REAL_JSON_CANDIDATES = ('imagenet-1k/real.json', 'imagenet-real/real.json', 'real.json')
VARIANTS: Dict[str, Variant] = {v.name: v for v in (
    Variant('in1k', 'ImageNet-1k val', 'imagenet-1k/val', 'top1', 'imagenet-1k/meta/val.txt', 88.2),
    Variant('real', 'ImageNet-ReaL', 'imagenet-1k/val', 'real', 'imagenet-1k/meta/val.txt', 90.4),
    Variant('v2', 'ImageNet-V2', 'imagenetv2', 'top1', None, 79.9),
    Variant('a', 'ImageNet-A', 'imagenet-a', 'subset', None, 77.5),
    Variant('r', 'ImageNet-R', 'imagenet-r', 'subset', None, 89.8),
    Variant('sketch', 'ImageNet-Sketch', 'imagenet-sketch', 'top1', None, 69.1),
)}
# The split of a linear-probe feature cache that holds each variant's features (ReaL re-scores the val split).
CACHE_SPLIT = {name: ('in1k' if name == 'real' else name) for name in VARIANTS}



# ------------------------------------------------------------------ folders
def _is_image(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS)


def _is_class_dir(name: str) -> bool:
    return bool(WNID_RE.match(name)) or name.isdigit()


def resolve_class_root(path: str) -> str:
    """``path``, or the folder below it that holds the class folders (see the module docstring)."""
    seen = path
    for _ in range(3):
        if not osp.isdir(seen):
            break
        entries = [e for e in os.listdir(seen) if not e.startswith('.')]
        if any(_is_class_dir(e) and osp.isdir(osp.join(seen, e)) for e in entries):
            return seen
        subdirs = [e for e in entries if osp.isdir(osp.join(seen, e))]
        if len(subdirs) != 1 or any(_is_image(e) for e in entries):
            break
        seen = osp.join(seen, subdirs[0])
    return path


def class_folders(path: str) -> List[str]:
    """Sorted class folder names (wnids, or class indices as ImageNet-V2 names them)."""
    if not osp.isdir(path):
        return []
    return sorted(e for e in os.listdir(path) if _is_class_dir(e) and osp.isdir(osp.join(path, e)))


def _images_in(folder: str) -> List[str]:
    return sorted(f for f in os.listdir(folder) if _is_image(f) and not f.startswith('.'))


def scan_class_folders(root: str, wnid_to_idx: Optional[Dict[str, int]]) -> List[Tuple[str, int]]:
    """(path, class index) of every image under ``root/<class folder>/``, sorted by path.

    Folders named by a number are that class index (ImageNet-V2); wnid folders go through
    ``wnid_to_idx``, which must know every one of them.
    """
    items = []
    for name in class_folders(root):
        if name.isdigit():
            label = int(name)
        else:
            if wnid_to_idx is None:
                raise ValueError(f'{root} has wnid folders but no class list was given to map them to indices')
            if name not in wnid_to_idx:
                raise ValueError(f'{root}/{name} is not one of the {len(wnid_to_idx)} training classes')
            label = wnid_to_idx[name]
        folder = osp.join(root, name)
        items += [(osp.join(folder, f), label) for f in _images_in(folder)]
    return items


def read_ann_file(ann_file: str, img_root: str) -> List[Tuple[str, int]]:
    """Lines ``relative/path.JPEG <class index>`` (the ``meta/*.txt`` convention)."""
    items = []
    with open(ann_file) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.rsplit(maxsplit=1)
            if len(parts) != 2 or not parts[1].lstrip('-').isdigit():
                raise ValueError(f'{ann_file}:{n}: expected "<path> <class index>", got {line.strip()!r}')
            items.append((osp.join(img_root, parts[0]), int(parts[1])))
    return items


# --------------------------------------------------------------- class list
def train_wnids(data_root: str = '', train_path: Optional[str] = None, train_ann: Optional[str] = None) -> List[str]:
    """The ImageNet-1k class list, index order: the sorted train folders, else the train annotation file."""
    train_path = resolve_class_root(osp.join(data_root, train_path or TRAIN_PATH))
    wnids = [w for w in class_folders(train_path) if WNID_RE.match(w)]
    if wnids:
        return wnids
    ann = osp.join(data_root, train_ann or TRAIN_ANN)
    if osp.isfile(ann):
        by_label = {}
        for path, label in read_ann_file(ann, ''):
            wnid = path.replace('\\', '/').split('/')[0]
            if by_label.setdefault(label, wnid) != wnid:
                raise ValueError(f'{ann}: class {label} is both {by_label[label]} and {wnid}')
        if sorted(by_label) != list(range(len(by_label))):
            raise ValueError(f'{ann}: class indices are not 0..{len(by_label) - 1}')
        return [by_label[i] for i in range(len(by_label))]
    raise FileNotFoundError(f'no ImageNet-1k train classes: neither wnid folders in {train_path} nor {ann}; '
                            + DATA_HELP)


# -------------------------------------------------------------------- splits
def list_split(path: str, wnids: Sequence[str], ann_file: Optional[str] = None) -> List[Tuple[str, int]]:
    """Images of one split: class folders under ``path``, else ``ann_file`` (relative to ``path``)."""
    root = resolve_class_root(path)
    if class_folders(root):
        items = scan_class_folders(root, {w: i for i, w in enumerate(wnids)})
    elif ann_file and osp.isfile(ann_file):
        items = read_ann_file(ann_file, path)
    else:
        raise FileNotFoundError(f'no class folders in {path}' + (f' and no {ann_file}' if ann_file else '')
                                + '; ' + DATA_HELP)
    if not items:
        raise FileNotFoundError(f'no images under {path}; ' + DATA_HELP)
    bad = [label for _, label in items if not 0 <= label < len(wnids)]
    if bad:
        raise ValueError(f'{path}: class index {bad[0]} outside the {len(wnids)} training classes')
    return items


def val_number(path: str) -> Optional[int]:
    """1-based number of an ImageNet val image from its file name, or None."""
    m = VAL_NUMBER_RE.search(osp.basename(path))
    return int(m.group(1)) if m else None


def real_labels_for(items: Sequence[Tuple[str, int]], real_json: str) -> List[List[int]]:
    """The ReaL label set of each val image, matched by the number in its file name.

    ``real.json`` lists the sets in val-number order; an empty set means the raters found
    no ImageNet class that fits, and such images are left out of the ReaL score.
    """
    with open(real_json) as f:
        sets = json.load(f)
    out = []
    for path, _ in items:
        n = val_number(path)
        if n is None or not 1 <= n <= len(sets):
            raise ValueError(f'{path} is not an ILSVRC2012_val_<n> image covered by {real_json} '
                             f'({len(sets)} entries)')
        out.append([int(c) for c in sets[n - 1]])
    return out


def find_real_json(data_root: str, explicit: Optional[str] = None) -> Optional[str]:
    if explicit:
        return explicit if osp.isfile(explicit) else None
    for rel in REAL_JSON_CANDIDATES:
        if osp.isfile(osp.join(data_root, rel)):
            return osp.join(data_root, rel)
    return None


def class_subset(items: Sequence[Tuple[str, int]]) -> List[int]:
    return sorted({label for _, label in items})


# ------------------------------------------------------------- mmengine dataset
@DATASETS.register_module()
class ImageNetFolder(BaseDataset):
    """ImageNet-1k (train or val) or one of its variants, for the mmengine runner.

    Args:
        data_root: the data root of the layout above.
        data_prefix: ``dict(img_path=...)``, the split's folder (default: the variant's).
        ann_file: annotation file for a split without class folders (default: the variant's).
        variant: ``'train'`` or a key of :data:`VARIANTS`. ``real`` adds ``real_labels``
            to each sample; ``a``/``r`` put ``class_subset`` into the metainfo.
        train_path: where the class list comes from (see :func:`train_wnids`).
        real_json: ReaL labels (default: searched under the data root).
    """

    def __init__(self, data_root: str = '', variant: str = 'train', data_prefix: Optional[dict] = None,
                 ann_file: Optional[str] = None, train_path: Optional[str] = None, real_json: Optional[str] = None,
                 **kwargs):
        if variant != 'train' and variant not in VARIANTS:
            raise KeyError(f"variant must be 'train' or one of {sorted(VARIANTS)}, got {variant!r}")
        spec = VARIANTS.get(variant)
        default_path = TRAIN_PATH if variant == 'train' else spec.path
        default_ann = TRAIN_ANN if variant == 'train' else spec.ann_file
        self.variant = variant
        self._train_path = train_path
        self._real_json = real_json
        self._ann = ann_file if ann_file is not None else default_ann
        super().__init__(data_root=data_root, data_prefix=data_prefix or dict(img_path=default_path),
                         ann_file='', **kwargs)

    def load_data_list(self) -> List[dict]:
        img_dir = self.data_prefix['img_path']
        wnids = train_wnids(self.data_root, self._train_path)
        ann = self._ann and (self._ann if osp.isabs(self._ann) else osp.join(self.data_root, self._ann))
        items = list_split(img_dir, wnids, ann)
        self._metainfo.update(classes=tuple(wnids), variant=self.variant)
        if self.variant == 'r' or self.variant == 'a':
            self._metainfo['class_subset'] = class_subset(items)
        data = [dict(img_path=p, gt_label=label) for p, label in items]
        if self.variant == 'real':
            real_json = find_real_json(self.data_root, self._real_json)
            if real_json is None:
                raise FileNotFoundError(f'no real.json for ImageNet-ReaL under {self.data_root} '
                                        f'(looked for {REAL_JSON_CANDIDATES})')
            for d, labels in zip(data, real_labels_for(items, real_json)):
                d['real_labels'] = labels
        return data
