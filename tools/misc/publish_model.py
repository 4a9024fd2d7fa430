"""Prepare a trained checkpoint for release (our replacement of mmseg's publish_model.py).

    python tools/misc/publish_model.py work_dirs/x/iter_60000.pth release/san_vitb16_coco.pth
    -> release/san_vitb16_coco-<first 8 hex digits of the file's sha256>.pth

- keeps ``state_dict`` and ``meta`` (config, dataset classes, versions); drops the training
  state that only ``--resume`` needs: ``optimizer``, ``param_schedulers``, ``message_hub``;
- loads with ``torch.load(weights_only=True)`` and mmseg_ovseg's allow-list of the numpy/mmengine
  types mmengine writes (mmseg 1.2.2's script calls ``torch.load`` without it, which torch >=
  2.6 refuses for these files), ``--unsafe-load`` for trusted files with other objects;
- the hash in the name is the sha256 of the published file itself, the convention
  ``torch.hub.load_state_dict_from_url(check_hash=True)`` verifies (mmseg 1.2.2 hashes the
  input file, and strips the name with ``rstrip('.pth')``, which also eats trailing p/t/h);
- the file is written to a temporary name in the output folder and renamed into place, so
  an interrupted run leaves no partial file; nothing is written when loading fails.
"""
import argparse
import hashlib
import os
import os.path as osp
import sys
import tempfile

import torch

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from mmseg_ovseg.utils import register_safe_globals  # noqa: E402

TRAINING_STATE = ('optimizer', 'param_schedulers', 'message_hub')
BLOCK = 1 << 20


def sha256sum(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(BLOCK), b''):
            digest.update(block)
    return digest.hexdigest()


def strip_checkpoint(ckpt) -> tuple:
    """``(published dict, dropped keys)``; a bare state dict is wrapped as ``state_dict``."""
    if not isinstance(ckpt, dict):
        raise ValueError(f'expected a checkpoint dict, got {type(ckpt).__name__}')
    if 'state_dict' not in ckpt:
        if ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
            return dict(state_dict=ckpt), []
        raise ValueError(f'no "state_dict" in the checkpoint (keys: {sorted(ckpt)})')
    dropped = [k for k in TRAINING_STATE if k in ckpt]
    return {k: v for k, v in ckpt.items() if k not in TRAINING_STATE}, dropped


def publish(in_file: str, out_file: str, unsafe: bool = False) -> str:
    """Write the stripped checkpoint as ``<out stem>-<sha256[:8]>.pth``; return its path."""
    if not osp.isfile(in_file):
        raise FileNotFoundError(f'checkpoint not found: {in_file}')
    register_safe_globals()
    try:
        ckpt = torch.load(in_file, map_location='cpu', weights_only=not unsafe)
    except Exception as e:  # noqa: BLE001  (unpickling errors have many types)
        raise ValueError(f'{in_file}: cannot be loaded with weights_only=True ({e}); pass '
                         '--unsafe-load if you trust the file') from e
    published, dropped = strip_checkpoint(ckpt)
    stem = out_file[:-len('.pth')] if out_file.endswith('.pth') else out_file
    folder = osp.dirname(osp.abspath(stem))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.publish_', suffix='.pth', dir=folder)
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(published, f)
        final = f'{stem}-{sha256sum(tmp)[:8]}.pth'
        os.replace(tmp, final)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise
    note = f'dropped {", ".join(dropped)}' if dropped else 'no training state to drop'
    print(f'published {final} ({osp.getsize(final) / 2**20:.1f} MiB; {note})')
    return final


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description='Strip a checkpoint for release and name it '
                                     'with its sha256 prefix')
    parser.add_argument('in_file', help='checkpoint written by tools/train.py')
    parser.add_argument('out_file', help='output name; -<sha256[:8]> is inserted before .pth')
    parser.add_argument('--unsafe-load', action='store_true',
                        help='unpickle arbitrary objects in IN_FILE (trusted files only)')
    args = parser.parse_args(argv)
    try:
        publish(args.in_file, args.out_file, args.unsafe_load)
    except (FileNotFoundError, ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
