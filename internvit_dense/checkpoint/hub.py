"""Checkpoints named on the Hugging Face Hub, resolved to local paths through ``huggingface_hub``.

Wherever a checkpoint path is taken, three spellings name one on the Hub instead:

* ``OpenGVLab/InternViT-6B-448px-V2_5``: a model repository, as transformers and timm take it. Its
  ``config.json`` and weight files are fetched (``snapshot_download``; the safetensors if the repository has
  them, else the ``pytorch_model*.bin`` files), not the remote code, README or projector files beside them.
* ``hf://OpenGVLab/InternVL/upernet_intern_vit_6b_504_80k_ade20k_bs16_lr4e-5_frozen.pth``: one file of a
  repository (``hf_hub_download``), in the URL form of ``huggingface_hub.HfFileSystem``.
* ``hf://ORG/NAME`` (the whole repository) and ``@REVISION`` after the name (``hf://ORG/NAME@v1.0/FILE``).

A path that exists locally always wins over a Hub name of the same spelling. Everything else is the hub
client's: its cache (``HF_HOME`` / ``HF_HUB_CACHE``), its progress bars, ``HF_ENDPOINT`` for mirrors, its token
for gated repositories, and ``HF_HUB_OFFLINE=1``, which answers from the cache alone. When neither the network
nor the cache has what was asked, the error is one line: what was asked, the cache looked in, and the command
that fetches it.
"""
from __future__ import annotations

import os
import re
from typing import NamedTuple, Optional

from .files import CheckpointError

HF_URL = 'hf://'
# a repository id as the Hub spells it: ORG/NAME, letters, digits, '-', '_', '.'
_REPO_ID = r'[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*'
_HF_URL = re.compile(rf'^hf://(?P<repo>{_REPO_ID})(?:@(?P<rev>[^/]+))?(?:/(?P<file>.+))?$')
_BARE_ID = re.compile(rf'^{_REPO_ID}$')
# A bare ORG/NAME ending like a weight file is a local file that is missing, not a repository.
FILE_SUFFIXES = ('.pth', '.pt', '.bin', '.safetensors', '.ckpt', '.json')
# What the loaders read of a model repository (checkpoint/files.py): config.json and the weights.
SAFETENSORS_FILES = ['config.json', '*.safetensors', 'model.safetensors.index.json']
TORCH_FILES = ['config.json', 'pytorch_model*.bin', 'pytorch_model.bin.index.json']


class HubReference(NamedTuple):
    repo_id: str
    revision: Optional[str]
    filename: Optional[str]  # None: the repository's config and weights


class HubCheckpointError(CheckpointError):
    """A checkpoint named on the Hub that neither the network nor the cache can give: one line, what to do."""


def parse_hub_name(spec: str) -> Optional[HubReference]:
    """The Hub reference a spelling names, or None if it is not one (a local path)."""
    m = _HF_URL.match(spec)
    if m:
        if m.group('repo').split('/')[0] in ('datasets', 'spaces'):
            raise HubCheckpointError(f'{spec}: only model repositories hold checkpoints (hf://ORG/NAME/FILE)')
        return HubReference(m.group('repo'), m.group('rev'), m.group('file'))
    if spec.startswith(HF_URL):
        raise HubCheckpointError(f'{spec}: not a Hugging Face name; expected hf://ORG/NAME[@REVISION][/FILE]')
    if _BARE_ID.match(spec) and not spec.lower().endswith(FILE_SUFFIXES):
        return HubReference(spec, None, None)
    return None


def is_hub_name(spec) -> bool:
    """Whether ``spec`` would be fetched from the Hub (a Hub spelling that is not an existing local path)."""
    spec = os.fspath(spec) if isinstance(spec, os.PathLike) else spec
    return isinstance(spec, str) and not os.path.exists(spec) and parse_hub_name(spec) is not None


def resolve_checkpoint(spec, local_files_only: bool = False) -> str:
    """The local path of a checkpoint: ``spec`` itself if it exists or is no Hub name, else the Hub cache's
    copy of what it names (fetched once, if the network is allowed and reachable; never with
    ``local_files_only``)."""
    spec = os.fspath(spec)
    if os.path.exists(spec):
        return spec  # a local path always wins
    ref = parse_hub_name(spec)
    if ref is None:
        return spec  # the caller says 'not found' in its own words
    return _fetch(spec, ref, local_files_only)


def fetch_command(ref: HubReference) -> str:
    """The shell command that puts ``ref`` into the cache."""
    import huggingface_hub
    major, minor = (int(x) for x in huggingface_hub.__version__.split('.')[:2])
    cli = 'hf download' if (major, minor) >= (0, 34) else 'huggingface-cli download'  # `hf` replaced it in 0.34
    parts = [cli, ref.repo_id]
    if ref.filename:
        parts.append(ref.filename)
    else:
        parts += ['--include'] + [f"'{p}'" for p in dict.fromkeys(SAFETENSORS_FILES + TORCH_FILES)]
    if ref.revision:
        parts += ['--revision', ref.revision]
    return ' '.join(parts)


def _fetch(spec: str, ref: HubReference, local_files_only: bool = False) -> str:
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)
    try:
        if ref.filename:
            return huggingface_hub.hf_hub_download(ref.repo_id, ref.filename, revision=ref.revision,
                                                   local_files_only=local_files_only)
        return _snapshot(ref, local_files_only)
    # LocalEntryNotFoundError first: in huggingface_hub >= 1.0 it is also an EntryNotFoundError
    except LocalEntryNotFoundError:
        why = ('HF_HUB_OFFLINE=1' if constants.HF_HUB_OFFLINE else 'only the cache was asked' if local_files_only
               else f'{constants.ENDPOINT} could not be reached')
        raise HubCheckpointError(f'{spec}: no such local path, and not in the Hugging Face cache '
                                 f'{constants.HF_HUB_CACHE} ({why}); fetch it with: {fetch_command(ref)}') from None
    except GatedRepoError:
        raise HubCheckpointError(f'{spec}: {ref.repo_id} is gated on {constants.ENDPOINT}: accept its terms on the '
                                 'website, then log in (hf auth login) or set HF_TOKEN') from None
    except RepositoryNotFoundError:
        raise HubCheckpointError(f'{spec}: no repository {ref.repo_id} on {constants.ENDPOINT} (misspelt, or private: '
                                 'log in or set HF_TOKEN); a local path of this name does not exist either') from None
    except RevisionNotFoundError:
        raise HubCheckpointError(f'{spec}: {ref.repo_id} has no revision {ref.revision}') from None
    except EntryNotFoundError:
        raise HubCheckpointError(f'{spec}: {ref.repo_id} has no file {ref.filename}') from None


def _snapshot(ref: HubReference, local_files_only: bool = False) -> str:
    """The repository's config and weights: its safetensors if it has them, else its torch files. Offline or
    unreachable, ``snapshot_download`` answers from the cache itself."""
    import huggingface_hub

    def snapshot(patterns):
        return huggingface_hub.snapshot_download(ref.repo_id, revision=ref.revision, allow_patterns=patterns,
                                                 local_files_only=local_files_only)

    folder = snapshot(SAFETENSORS_FILES)
    if not any(name.endswith('.safetensors') for name in os.listdir(folder)):
        folder = snapshot(TORCH_FILES)
    return folder


__all__ = ['HubCheckpointError', 'HubReference', 'fetch_command', 'is_hub_name', 'parse_hub_name',
           'resolve_checkpoint']
