"""Checks a data set runs when it is built, so that a broken file is named before training starts."""
import os.path as osp
from typing import Iterable, Optional


def check_no_empty_files(paths: Iterable[Optional[str]], where: str) -> None:
    """Zero-byte files (an interrupted copy) fail inside OpenCV ('!buf.empty()') without a file name."""
    empty = [p for p in paths if p is not None and osp.isfile(p) and osp.getsize(p) == 0]
    if empty:
        raise ValueError(f'{len(empty)} empty (0-byte) files in {where}: {", ".join(empty[:5])}'
                         f'{" ..." if len(empty) > 5 else ""}; copy them again or remove them (with their '
                         'annotations)')
