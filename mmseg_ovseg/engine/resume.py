"""Crash-safe checkpoint files and exact resume: the pieces used by :class:`SafeCheckpointHook`
and ``tools/train.py``.

- :func:`fsync_file`, :func:`fsync_dir`, :func:`atomic_write_text`: durable, all-or-nothing
  writes (temporary file in the same folder, ``fsync``, ``os.replace``, ``fsync`` of the
  folder), so a ``kill -9`` or a full disk never leaves a half-written file under the final
  name.
- :func:`check_checkpoint`, :func:`find_resumable_checkpoint`: the newest checkpoint of a work
  dir that actually loads; broken ones (zero bytes, truncated, random bytes, a file named in
  ``last_checkpoint`` that is gone, an empty ``last_checkpoint``) are skipped with a warning
  naming the skipped and the chosen file.
- :func:`capture_rng_state`, :func:`restore_rng_state`: the Python, numpy and torch (CPU and
  CUDA) global random states, stored in a form ``torch.load(weights_only=True)`` accepts.
"""
import logging
import os
import os.path as osp
import random
import re
import tempfile
from typing import Dict, List, NamedTuple, Optional, Tuple

import numpy as np
import torch
from mmengine.logging import print_log

__all__ = [
    'fsync_file', 'fsync_dir', 'atomic_write_text', 'check_checkpoint', 'CheckpointChoice',
    'find_resumable_checkpoint', 'capture_rng_state', 'restore_rng_state', 'TMP_MARK'
]

# Temporary checkpoint files are named '.<final name>.tmp-<pid>': hidden, not '*.pth', so no
# reader takes one for a checkpoint, and a leftover from a killed save is recognisable.
TMP_MARK = '.tmp-'


def fsync_file(path: str) -> None:
    """Flush ``path``'s data to the disk (the writer has closed it)."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str) -> None:
    """Make renames/creations inside ``path`` durable (a no-op where folders cannot be opened,
    e.g. on Windows)."""
    try:
        fd = os.open(path or '.', os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a folder
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: str, text: str) -> None:
    """Replace ``path`` by a file holding ``text``, all or nothing, durably."""
    folder = osp.dirname(osp.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix='.' + osp.basename(path) + TMP_MARK, dir=folder)
    try:
        with os.fdopen(fd, 'w') as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise
    fsync_dir(folder)


def check_checkpoint(path: str) -> Tuple[Optional[str], Optional[dict]]:
    """Load ``path`` as an mmengine checkpoint.

    Returns:
        tuple: ``(None, meta)`` if it loads and holds a ``state_dict`` (``meta`` is its
        ``meta`` dict, possibly empty), else ``(reason, None)`` with a short reason.
    """
    if not path:
        return 'empty path', None
    if not osp.exists(path):
        return 'file not found', None
    if osp.isdir(path):
        return 'a directory, not a checkpoint file', None
    size = osp.getsize(path)
    if size == 0:
        return 'empty file (0 bytes)', None
    from mmseg_ovseg.utils import register_safe_globals
    register_safe_globals()
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # noqa: BLE001  (zip, pickle and I/O errors have many types)
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ''
        return (f'cannot be loaded ({size} bytes, truncated or corrupt?): '
                f'{type(e).__name__}: {msg[:200]}'), None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get('state_dict'), dict):
        return 'holds no "state_dict" (not a training checkpoint)', None
    if not ckpt['state_dict']:
        return 'its "state_dict" is empty', None
    meta = ckpt.get('meta')
    return None, meta if isinstance(meta, dict) else {}


class CheckpointChoice(NamedTuple):
    """The checkpoint to resume from: its path, its ``meta``, and the ``(path, reason)`` of
    every newer candidate that was skipped."""
    path: str
    meta: dict
    skipped: List[Tuple[str, str]]


# Names written by CheckpointHook's default filename_tmpl; published ('iter_8-1a2b3c4d.pth')
# and best ('best_mIoU_iter_8.pth') files are no resume candidates (no optimizer state).
_CKPT_NAME = re.compile(r'(?:iter|epoch)_(\d+)\.pth')


def _candidates(folders: List[str]) -> List[str]:
    """``iter_<n>.pth`` / ``epoch_<n>.pth`` files in ``folders``, highest ``n`` first."""
    found = {}
    for folder in folders:
        if not osp.isdir(folder):
            continue
        for name in os.listdir(folder):
            m = _CKPT_NAME.fullmatch(name)
            if m:
                path = osp.join(folder, name)
                found[osp.abspath(path)] = (int(m.group(1)), path)
    return [path for _, path in sorted(found.values(), reverse=True)]


def find_resumable_checkpoint(work_dir: str, logger: str = 'current'
                              ) -> Optional[CheckpointChoice]:
    """The checkpoint that ``--resume`` (no path) continues from.

    ``work_dir/last_checkpoint`` names it, as in mmengine. When that file is missing or empty,
    or the checkpoint it names does not load, the newest loadable ``*.pth`` of the work dir
    (and of the folder ``last_checkpoint`` points into) is taken instead, with a warning naming
    the skipped file(s) and the chosen one.

    Returns:
        CheckpointChoice or None: None when there is nothing to resume (no ``last_checkpoint``
        and no checkpoint file).

    Raises:
        RuntimeError: checkpoint files exist but none loads (each is named with its reason).
    """
    record = osp.join(work_dir, 'last_checkpoint')
    skipped: List[Tuple[str, str]] = []
    named = None
    folders = [work_dir]
    if osp.isfile(record):
        with open(record) as f:
            named = f.read().strip()
        if not named:
            skipped.append((record, 'empty file: names no checkpoint'))
        else:
            if not osp.isabs(named) and not osp.exists(named):
                named = osp.join(work_dir, named)
            folders.append(osp.dirname(named))
    candidates = _candidates(folders)
    if named:
        candidates = [named] + [c for c in candidates
                                if osp.abspath(c) != osp.abspath(named)]
    for path in candidates:
        reason, meta = check_checkpoint(path)
        if reason is None:
            if skipped:
                listing = '; '.join(f'{p} ({r})' for p, r in skipped)
                print_log(f'resume: skipped {listing}; resuming from the previous loadable '
                          f'checkpoint {path}', logger=logger, level=logging.WARNING)
            return CheckpointChoice(path, meta, skipped)
        skipped.append((path, reason))
    if any(p != record for p, _ in skipped):
        listing = '\n  '.join(f'{p}: {r}' for p, r in skipped)
        raise RuntimeError(f'resume: no checkpoint in {work_dir} can be loaded:\n  {listing}\n'
                           'Remove or repair them, or train without --resume.')
    if skipped:
        print_log(f'resume: {record} is empty and there is no checkpoint file in {work_dir}; '
                  'training from scratch', logger=logger, level=logging.WARNING)
    return None


# --- random states ------------------------------------------------------------------------


def capture_rng_state() -> Dict:
    """The global random states of this process (Python ``random``, numpy's legacy global
    generator, torch CPU and, if initialised, CUDA)."""
    version, internal, gauss = random.getstate()
    _, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    state = dict(
        python=dict(version=version, internal=torch.tensor(internal, dtype=torch.int64),
                    gauss=gauss),
        numpy=dict(keys=torch.from_numpy(keys.astype(np.int64)), pos=int(pos),
                   has_gauss=int(has_gauss), cached_gaussian=float(cached_gaussian)),
        torch=torch.get_rng_state(),
    )
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Dict) -> None:
    """Inverse of :func:`capture_rng_state`."""
    py = state['python']
    random.setstate((py['version'], tuple(int(v) for v in py['internal'].tolist()),
                     py['gauss']))
    npy = state['numpy']
    np.random.set_state(('MT19937', npy['keys'].numpy().astype(np.uint32), npy['pos'],
                         npy['has_gauss'], npy['cached_gaussian']))
    torch.set_rng_state(state['torch'])
    cuda = state.get('cuda')
    if cuda is not None and torch.cuda.is_available():
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:
            print_log(f'resume: the checkpoint holds {len(cuda)} CUDA random states, this '
                      f'machine has {torch.cuda.device_count()} devices; CUDA states not '
                      'restored', logger='current', level=logging.WARNING)
