"""Resume finds the newest loadable checkpoint: each kind of broken newest checkpoint skipped
with a warning, an empty last_checkpoint, nothing to resume, no loadable checkpoint, and
tools/train.py's --resume resolution, on the toy model of test_engine_hooks.py (split from
test_engine_hooks.py; tests unchanged)."""
import numpy as np
import pytest
import torch
from mmengine.config import Config

from mmseg_ovseg.engine import find_resumable_checkpoint
from test_engine_hooks import Record, make_runner

# --- resume finds the newest loadable checkpoint -----------------------------------------


@pytest.fixture
def two_checkpoints(tmp_path):
    make_runner(tmp_path, max_iters=4, max_keep_ckpts=2).train()
    assert (tmp_path / 'last_checkpoint').read_text() == str(tmp_path / 'iter_4.pth')
    return tmp_path


def _truncate(path):
    data = open(path, 'rb').read()
    open(path, 'wb').write(data[:len(data) // 3])


@pytest.mark.parametrize('damage', ['zero-bytes', 'truncated', 'random-bytes', 'missing',
                                    'directory', 'not-a-checkpoint'])
def test_broken_newest_checkpoint_skipped(two_checkpoints, warnings_log, damage):
    work = two_checkpoints
    newest = work / 'iter_4.pth'
    if damage == 'zero-bytes':
        newest.write_bytes(b'')
    elif damage == 'truncated':
        _truncate(newest)
    elif damage == 'random-bytes':
        newest.write_bytes(np.random.default_rng(0).bytes(5000))
    elif damage == 'missing':
        newest.unlink()
    elif damage == 'directory':
        newest.unlink()
        newest.mkdir()
    else:
        torch.save({'weights': torch.zeros(2)}, newest)
    choice = find_resumable_checkpoint(str(work))
    assert choice.path == str(work / 'iter_2.pth')
    assert choice.meta['iter'] == 2
    assert [p for p, _ in choice.skipped] == [str(newest)]
    assert any(str(newest) in m and str(work / 'iter_2.pth') in m for m in warnings_log)
    if damage == 'directory':  # (the new iter_4.pth could not replace a folder)
        return
    # a runner built with resume=True takes the same one
    record = Record()
    make_runner(work, max_iters=5, record=record, resume=True, max_keep_ckpts=2).train()
    assert sorted(record.losses) == [3, 4, 5]


def test_empty_last_checkpoint(two_checkpoints, warnings_log):
    (two_checkpoints / 'last_checkpoint').write_text('')
    choice = find_resumable_checkpoint(str(two_checkpoints))
    assert choice.path == str(two_checkpoints / 'iter_4.pth')
    assert any('last_checkpoint' in m and 'empty' in m for m in warnings_log)


def test_nothing_to_resume(tmp_path):
    assert find_resumable_checkpoint(str(tmp_path)) is None
    (tmp_path / 'last_checkpoint').write_text('')
    assert find_resumable_checkpoint(str(tmp_path)) is None
    record = Record()
    make_runner(tmp_path, max_iters=2, record=record, resume=True).train()
    assert sorted(record.losses) == [1, 2]


def test_no_loadable_checkpoint_is_an_error(two_checkpoints):
    for name in ('iter_2.pth', 'iter_4.pth'):
        _truncate(two_checkpoints / name)
    with pytest.raises(RuntimeError, match='no checkpoint .* can be loaded') as err:
        find_resumable_checkpoint(str(two_checkpoints))
    assert 'iter_2.pth' in str(err.value) and 'iter_4.pth' in str(err.value)


def test_train_py_resume_resolution(two_checkpoints, tmp_path):
    from tool_loader import load_tool
    train = load_tool('train')
    (two_checkpoints / 'iter_4.pth').write_bytes(b'')
    cfg = Config(dict(work_dir=str(two_checkpoints), randomness=dict(seed=None)))
    train.resolve_resume(cfg, 'auto')
    assert cfg.resume and cfg.load_from == str(two_checkpoints / 'iter_2.pth')
    assert cfg.randomness.seed == 0  # the interrupted run's seed, for the data loaders
    with pytest.raises(ValueError, match='iter_4.pth: empty file'):
        train.resolve_resume(cfg, str(two_checkpoints / 'iter_4.pth'))
    cfg = Config(dict(work_dir=str(tmp_path / 'empty')))
    train.resolve_resume(cfg, 'auto')
    assert cfg.resume is False and cfg.load_from is None
