"""A work dir belongs to one run and holds everything that run needs: resuming reads only files
inside it, and a lock keeps a second run out.

mmengine records absolute paths (``last_checkpoint``, the best-checkpoint record in the message
hub), so a copied or moved work dir would resume from, and rotate files of, the original folder.
Here a record names a file; the file is looked up by that name inside the work dir.
"""
import json
import os
import os.path as osp
import re
import socket
import sys
import time
import zipfile
from typing import List, Optional, Tuple

LOCK_NAME = 'train.lock'
CHECKPOINT_NAME = re.compile(r'^(iter|epoch)_(\d+)\.pth$')


class WorkDirBusy(RuntimeError):
    """Another live run holds the work dir."""


def _process_start(pid: int) -> Optional[str]:
    """The kernel's start time of ``pid`` (clock ticks since boot), to tell a reused pid apart."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, started: Optional[str]) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    now = _process_start(pid)
    return started is None or now is None or now == started


class WorkDirLock:
    """``<work_dir>/train.lock`` naming the holder (host, pid, command). Stale-safe: a lock left
    by a process that no longer runs on this host (kill -9, power cut) is taken over with a
    warning; a lock from another host is never broken, as its process cannot be checked from here.

    The lock file appears whole or not at all (written under a temporary name, then hard-linked
    to its final name, which fails if the name exists), so two runs starting together cannot both
    take it.
    """

    def __init__(self, work_dir: str):
        self.work_dir = osp.abspath(work_dir)
        self.path = osp.join(self.work_dir, LOCK_NAME)
        self.held = False
        self.me = dict(host=socket.gethostname(), pid=os.getpid(), started=_process_start(os.getpid()),
                       since=time.strftime('%Y-%m-%d %H:%M:%S'), command=' '.join(sys.argv))

    def holder(self) -> Optional[dict]:
        try:
            with open(self.path) as f:
                return json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}

    def describe(self, holder: dict) -> str:
        return (f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('since')} "
                f"({holder.get('command', '?')})")

    def acquire(self) -> List[str]:
        """Takes the lock; returns warnings (a stale lock taken over). Raises :class:`WorkDirBusy`."""
        os.makedirs(self.work_dir, exist_ok=True)
        temp = f'{self.path}.{self.me["host"]}.{self.me["pid"]}'
        with open(temp, 'w') as f:
            json.dump(self.me, f)
        notes = []
        try:
            for _ in range(3):
                try:
                    os.link(temp, self.path)
                    self.held = True
                    return notes
                except FileExistsError:
                    pass
                holder = self.holder()
                if holder is None:  # released meanwhile
                    continue
                if holder.get('host') == self.me['host'] and isinstance(holder.get('pid'), int) \
                        and not _alive(holder['pid'], holder.get('started')):
                    notes.append(f'{self.path}: taking over the lock of a run that no longer runs '
                                 f'({self.describe(holder)}; killed or crashed)')
                    try:
                        os.remove(self.path)
                    except FileNotFoundError:
                        pass
                    continue
                where = ('on another host: if that run is over, delete the lock file' if
                         holder.get('host') != self.me['host'] else 'wait for it to finish or stop it')
                raise WorkDirBusy(f'work dir {self.work_dir} is in use by another training run: '
                                  f'{self.describe(holder) if holder else "unreadable lock file"}. Two runs in '
                                  f'one work dir overwrite each other\'s checkpoints; use another --work-dir, or '
                                  f'{where} ({self.path})')
            raise WorkDirBusy(f'could not take {self.path}: it keeps changing hands')
        finally:
            os.remove(temp)

    def release(self) -> None:
        if self.held:
            holder = self.holder()
            if holder and holder.get('pid') == self.me['pid'] and holder.get('host') == self.me['host']:
                os.remove(self.path)
            self.held = False


def checkpoint_problem(path: str) -> Optional[str]:
    """What makes ``path`` not a whole checkpoint file, or None. Reads the zip directory torch writes
    at the end of the file, not the tensors: a truncated or zero-byte file has none."""
    if not osp.exists(path):
        return 'does not exist'
    if osp.isdir(path):
        return None  # a DeepSpeed folder; engine.deepspeed.check_zero_checkpoint checks those
    size = osp.getsize(path)
    if size == 0:
        return 'is empty (0 bytes)'
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
                end = max(i.header_offset + i.compress_size for i in z.infolist())
        except (zipfile.BadZipFile, OSError, ValueError) as e:
            return f'is damaged ({e})'
        if not any(n.endswith('/data.pkl') or n == 'data.pkl' for n in names):
            return 'is a zip file but not a torch checkpoint (no data.pkl)'
        if end > size:
            return f'is truncated ({size} bytes, its index needs more than {end})'
        return None
    with open(path, 'rb') as f:
        head = f.read(2)
    if head == b'PK':  # a zip file whose end (the index) is missing: cut off while being written or copied
        return f'is truncated ({size} bytes; the zip index torch writes at the end is missing)'
    if head[:1] != b'\x80':  # torch's legacy (pre-1.6) format starts with a pickle protocol byte
        return f'is not a torch checkpoint ({size} bytes, neither a torch zip file nor a pickle)'
    return None


def checkpoints_in(work_dir: str) -> List[str]:
    """``iter_N.pth`` / ``epoch_N.pth`` in ``work_dir``, newest (highest N) first."""
    try:
        names = os.listdir(work_dir)
    except FileNotFoundError:
        return []
    found = [(int(m.group(2)), n) for n in names if (m := CHECKPOINT_NAME.match(n))]
    return [osp.join(work_dir, n) for _, n in sorted(found, reverse=True)]


def inside(path: str, folder: str) -> bool:
    path, folder = osp.realpath(path), osp.realpath(folder)
    return osp.commonpath([path, folder]) == folder


def find_resume_checkpoint(work_dir: str) -> Tuple[str, List[str]]:
    """The checkpoint ``--resume`` continues from: the one ``last_checkpoint`` names, looked up inside
    ``work_dir``; if that one is damaged or gone, the newest whole ``iter_N.pth`` there.

    Returns the path and the warnings to show. Raises FileNotFoundError when there is nothing to resume.
    """
    work_dir = osp.abspath(work_dir)
    notes, candidates = [], []
    record = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(record):
        recorded = open(record).read().strip()
        local = osp.join(work_dir, osp.basename(recorded.rstrip('/')))
        if recorded and not inside(recorded, work_dir):
            notes.append(f'{record} names {recorded}, outside the work dir (copied or moved?): resuming from '
                         f'{local} instead; nothing outside {work_dir} is read or changed')
        candidates.append(local)
    candidates += [c for c in checkpoints_in(work_dir) if c not in candidates]
    if not candidates:
        raise FileNotFoundError(f'no checkpoint to resume from in {work_dir} (no last_checkpoint file and no '
                                'iter_*.pth); start without --resume, or give --resume PATH')
    damaged = []
    for path in candidates:
        problem = checkpoint_problem(path)
        if problem is None:
            if damaged:
                notes.append('; '.join(damaged) + f': resuming from the previous whole checkpoint {path} instead')
            return path, notes
        damaged.append(f'checkpoint {path} {problem}')
    raise FileNotFoundError(f'no whole checkpoint to resume from in {work_dir}: ' + '; '.join(damaged))


def check_resume_file(path: str) -> None:
    """``--resume PATH``: the named file must be whole; if not, the error names a whole one next to it."""
    problem = checkpoint_problem(path)
    if problem is None:
        return
    whole = [c for c in checkpoints_in(osp.dirname(osp.abspath(path)))
             if osp.abspath(c) != osp.abspath(path) and checkpoint_problem(c) is None]
    hint = f'; the newest whole one next to it is {whole[0]} (--resume {whole[0]})' if whole else ''
    raise FileNotFoundError(f'--resume: checkpoint {path} {problem}{hint}')
