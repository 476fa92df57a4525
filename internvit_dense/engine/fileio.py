"""Checkpoint files that are either whole or absent.

mmengine's ``LocalBackend.put`` opens the final name and writes into it: a full disk or a kill
leaves a truncated ``iter_N.pth`` that ``last_checkpoint`` may point at. ``AtomicLocalBackend`` is
the same backend with ``put`` written the way databases write files: into a temporary name in the
same folder, flushed to disk, then renamed over the final name (a rename within one file system
is atomic), and the folder entry synced. ``WorkDirCheckpointHook`` saves through it.
"""
import errno
import os
import os.path as osp
import shutil
from pathlib import Path
from typing import Union

from mmengine.fileio import LocalBackend, register_backend

TEMP_MARK = '.partial-'


class CheckpointWriteError(OSError):
    """A checkpoint could not be written; no partial file was left."""


def free_space(folder: str) -> str:
    try:
        return f'{shutil.disk_usage(folder).free / 2**30:.2f} GiB'
    except OSError:
        return 'unknown'


def write_atomically(data: bytes, path: Union[str, Path]) -> None:
    """Writes ``data`` to ``path`` so that ``path`` holds either its old content or all of ``data``."""
    path = str(path)
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    temp = osp.join(folder, f'{TEMP_MARK}{os.getpid()}-{osp.basename(path)}')
    try:
        with open(temp, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except OSError as e:
        try:
            os.remove(temp)
        except OSError:
            pass
        reason = e.strerror or str(e)
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            reason += ' (the disk, a quota or a file-size limit is full)'
        raise CheckpointWriteError(e.errno, f'could not write {path}: {reason}; {free_space(folder)} free in {folder}; '
                      'nothing was written under that name (earlier checkpoints are untouched)') from e
    try:  # the rename itself survives a power cut only once the folder is synced
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # some file systems refuse fsync on a folder; the rename has happened
        pass


@register_backend('atomic_local')
class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend whose ``put`` never leaves a half-written file."""

    def put(self, obj: bytes, filepath: Union[str, Path]) -> None:
        write_atomically(obj, filepath)
