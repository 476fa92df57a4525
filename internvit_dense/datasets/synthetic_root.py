"""The folder a synthetic data set is written into, as the ``synthetic_*`` generators share it.

Two files make a root safe to regenerate and safe to read::

    <root>/.synthetic_<set>  the owner stamp, written before anything else: ``overwrite`` deletes files
                             only where it finds its stamp, never in a real data set given by mistake
    <root>/.complete         the completion marker (the run's JSON summary), removed first and written
                             last: a run that dies half-way leaves a root that does not look finished
"""
import json
import os
import shutil
from typing import Optional, Sequence

MARKER = '.complete'


def parse_size(text: str):
    """'N' -> N, 'LO,HI' -> (LO, HI): a side length, or the range each image's sides are drawn from."""
    lo, _, hi = text.partition(',')
    return int(lo) if not hi else (int(lo), int(hi))


def prepare_root(root: str, overwrite: bool, *, dataset: str, owner_stamp: str, generated: Sequence[str]) -> None:
    """Makes ``root`` ready for a new set: it must be missing or empty unless ``overwrite``.

    Args:
        dataset: what the set stands in for, for messages ('COCO').
        owner_stamp: file name of the stamp that marks ``root`` as this generator's.
        generated: the folders and files (relative to ``root``) a set consists of. ``overwrite``
            deletes these whole, so other files in ``root`` survive and no stale file of a larger
            earlier set is read with the new one.
    """
    if os.path.exists(root) and not os.path.isdir(root):
        raise NotADirectoryError(f'{root} exists and is not a directory')
    if os.path.isdir(root) and os.listdir(root):
        if not overwrite:
            raise FileExistsError(f'{root} is not empty; pass overwrite=True (--overwrite) to replace the '
                                  f'synthetic {dataset} set in it')
        clashes = [p for p in generated if os.path.lexists(os.path.join(root, p))]
        if clashes and not os.path.exists(os.path.join(root, owner_stamp)):
            raise FileExistsError(f'{root} holds {", ".join(clashes)}, which this generator did not write '
                                  f'(no {owner_stamp} file); refusing to overwrite')
        # The marker first, so that a run interrupted from here on never looks complete.
        for path in (MARKER, MARKER + '.tmp', *generated):
            _delete(os.path.join(root, path))
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, owner_stamp), 'w') as f:
        f.write(f'Written by the synthetic {dataset} generator of internvit_dense.datasets; overwrite=True '
                f'may delete {", ".join(generated)} here.\n')


def write_completion_marker(root: str, summary: dict) -> None:
    """Stores ``summary`` as the marker; call it last, once every file of the set is written."""
    # Written aside and renamed: a run killed mid-write leaves no half marker that could parse.
    tmp = os.path.join(root, MARKER + '.tmp')
    with open(tmp, 'w') as f:
        json.dump(summary, f, indent=1)
    os.replace(tmp, os.path.join(root, MARKER))


def read_completion_marker(root: str) -> Optional[dict]:
    """The summary a finished run stored, or None if there is no (readable) marker."""
    try:
        with open(os.path.join(root, MARKER)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def progress_bar(items: Sequence, enabled: bool, desc: str):
    """``items`` behind a tqdm bar counting images, or as they are when ``enabled`` is False."""
    if not enabled:
        return items
    from tqdm import tqdm
    return tqdm(items, desc=desc, unit='img', dynamic_ncols=True)


def _delete(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)
