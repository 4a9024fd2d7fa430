"""mmengine checkpoints load under torch's weights-only unpickler (mmseg_ovseg.utils.checkpoint).

A small mmengine model is trained with the real ``Runner`` so the checkpoints hold everything
mmengine writes (message hub HistoryBuffers with numpy arrays, numpy scalars, optimizer and
scheduler states).
"""
import pickle
import uuid

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer
from mmengine.model import BaseModel
from mmengine.runner import Runner, load_checkpoint
from torch.utils.data import Dataset

import mmseg_ovseg  # noqa: F401  (registers the allow-list)
from mmseg_ovseg.utils import register_safe_globals


class ToyModel(BaseModel):

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 1)

    def forward(self, inputs, labels=None, mode='tensor'):
        out = self.linear(inputs).squeeze(-1)
        if mode == 'loss':
            return dict(loss=((out - labels)**2).mean())
        return out


class ToyData(Dataset):

    def __len__(self):
        return 16

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return dict(inputs=torch.randn(4, generator=g), labels=torch.tensor(float(i % 3)))


class RecordIters(Hook):
    """Records trained iterations; optionally crashes after a given iteration."""

    def __init__(self, crash_after=None):
        self.seen = []
        self.start_weight = None
        self.crash_after = crash_after

    def before_train(self, runner):
        self.start_weight = runner.model.linear.weight.detach().clone()

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.seen.append(runner.iter + 1)
        if self.crash_after is not None and runner.iter + 1 == self.crash_after:
            raise RuntimeError('simulated interruption')


def make_runner(work_dir, max_iters=4, resume=False, load_from=None, hook=None):
    return Runner(
        model=ToyModel(),
        work_dir=str(work_dir),
        experiment_name=f'toy_{uuid.uuid4().hex[:8]}',
        train_dataloader=dict(
            dataset=ToyData(), sampler=dict(type='DefaultSampler', shuffle=True),
            batch_size=2, num_workers=0, collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=0.01)),
        param_scheduler=dict(type='MultiStepLR', milestones=[2], by_epoch=False),
        train_cfg=dict(by_epoch=False, max_iters=max_iters, val_interval=1000),
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False),
            logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=[hook] if hook is not None else None,
        resume=resume,
        load_from=load_from,
        randomness=dict(seed=0),
        default_scope='mmengine')


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    work_dir = tmp_path_factory.mktemp('ckpt')
    runner = make_runner(work_dir)
    runner.train()
    return work_dir, runner


def test_runner_checkpoint_loads_weights_only(trained):
    work_dir, runner = trained
    ckpt = torch.load(work_dir / 'iter_4.pth', map_location='cpu', weights_only=True)
    assert ckpt['meta']['iter'] == 4
    buffers = ckpt['message_hub']['log_scalars']
    assert isinstance(buffers['train/loss'], HistoryBuffer)
    assert buffers['train/loss'].data[0].shape == (4, )  # the numpy history survived
    assert set(ckpt) >= {'state_dict', 'optimizer', 'param_schedulers', 'message_hub'}
    torch.testing.assert_close(ckpt['state_dict']['linear.weight'],
                               runner.model.linear.weight.detach())


def test_mmengine_load_checkpoint(trained):
    work_dir, runner = trained
    model = ToyModel()
    ckpt = load_checkpoint(model, str(work_dir / 'iter_4.pth'), map_location='cpu',
                           strict=True)
    assert ckpt['meta']['iter'] == 4
    torch.testing.assert_close(model.linear.weight, runner.model.linear.weight.detach())


def test_numpy_values_load(tmp_path):
    values = dict(f32=np.float32(1.5), i64=np.int64(3), b=np.bool_(True),
                  arr=np.arange(6, dtype=np.uint8).reshape(2, 3), f16=np.ones(2, np.float16),
                  s=np.array(['a', 'bc']))
    torch.save(values, tmp_path / 'np.pth')
    out = torch.load(tmp_path / 'np.pth', weights_only=True)
    for k, v in values.items():
        np.testing.assert_array_equal(out[k], v)
        assert out[k].dtype == v.dtype


class Arbitrary:
    """Not allow-listed."""

    def __init__(self):
        self.x = 1


class SneakyGetattr:
    """Pickles as getattr(<something other than HistoryBuffer>, 'tofile')."""

    def __reduce__(self):
        return getattr, (np.ndarray, 'tofile')


class PrivateGetattr:

    def __reduce__(self):
        return getattr, (HistoryBuffer, '_set_default_statistics')


@pytest.mark.parametrize('obj', [
    Arbitrary(),
    SneakyGetattr(),
    PrivateGetattr(),
    np.array([Arbitrary()], dtype=object),
], ids=['class', 'getattr-other-object', 'getattr-private', 'object-array'])
def test_other_objects_still_refused(tmp_path, obj):
    register_safe_globals()
    path = tmp_path / 'bad.pth'
    torch.save({'state_dict': {}, 'payload': obj}, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    with pytest.raises(pickle.UnpicklingError):  # mmengine's loader is not a back door
        load_checkpoint(ToyModel(), str(path))


def test_resume_continues_from_saved_iter(tmp_path):
    crash = RecordIters(crash_after=3)
    with pytest.raises(RuntimeError, match='simulated interruption'):
        make_runner(tmp_path, hook=crash).train()
    assert crash.seen == [1, 2, 3]
    saved = torch.load(tmp_path / 'iter_2.pth', weights_only=True)

    record = RecordIters()
    runner = make_runner(tmp_path, resume=True, hook=record)
    runner.train()
    assert record.seen == [3, 4]  # continued after the last checkpoint (iter 2)
    torch.testing.assert_close(record.start_weight, saved['state_dict']['linear.weight'])
    assert runner.iter == 4
    # the optimizer state and the LR schedule were restored too
    assert runner.optim_wrapper.optimizer.state_dict()['state'][0]['step'] == 4
    assert runner.optim_wrapper.get_lr()['lr'][0] == pytest.approx(0.001)


def test_load_from_round_trip(trained, tmp_path):
    work_dir, first = trained
    runner = make_runner(tmp_path, load_from=str(work_dir / 'iter_4.pth'))
    runner.load_or_resume()
    assert runner.iter == 0  # load_from loads weights only, it does not resume
    for (name, a), (_, b) in zip(runner.model.state_dict().items(),
                                 first.model.state_dict().items()):
        assert torch.equal(a, b), name


# ---------------------------------------------------------------- mmseg_ovseg.utils.strict_load
def _bn_net():
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))


def test_compare_state_dict_lists_missing_unexpected_and_misshaped():
    from mmseg_ovseg.utils.strict_load import compare_state_dict
    net = _bn_net()
    state = dict(net.state_dict())
    assert not compare_state_dict(net, state)
    del state['2.bias'], state['1.num_batches_tracked']  # the BN counter may be absent
    state['0.weight'] = torch.zeros(5, 4)
    state['3.weight'] = torch.zeros(1)
    found = compare_state_dict(net, state)
    assert found.missing == ['2.bias'] and found.unexpected == ['3.weight']
    assert found.mismatched == [('0.weight', (5, 4), (3, 4))]
    text = found.describe()
    assert 'missing keys (1): 2.bias' in text
    assert 'unexpected keys (1): 3.weight' in text
    assert 'wrong shape (1): 0.weight: checkpoint (5, 4) vs model (3, 4)' in text
    # known non-fitting keys, by prefix; a module's state dict works as the target too
    assert not compare_state_dict(net.state_dict(), {**net.state_dict(), '3.weight': 0},
                                  ignore_unexpected='3.')
    assert not compare_state_dict(net, {k: v for k, v in net.state_dict().items()
                                        if not k.startswith('2.')}, ignore_missing=['2.'])
    many = compare_state_dict(net, {f'extra{i}': torch.zeros(1) for i in range(25)})
    assert many.describe().count('extra') == 20 and '... and 5 more' in many.describe()
    # one line (command-line errors): a cut list is counted per top-level module
    line = compare_state_dict(net, {**net.state_dict(), **{f'backbone.b{i}': torch.zeros(1)
                                                           for i in range(25)}}
                              ).describe(limit=3, one_line=True)
    assert line == ('unexpected keys (25; backbone.*: 25): backbone.b0, backbone.b1, '
                    'backbone.b2 ... and 22 more')
    # the exact comparison (converters, load guard, CLIP towers): the BN counter is required
    state = {k: v for k, v in net.state_dict().items() if k != '1.num_batches_tracked'}
    assert not compare_state_dict(net, state)
    assert compare_state_dict(net, state, allow_missing_bn_counter=False).missing == [
        '1.num_batches_tracked']


def test_load_state_dict_checked_error_leaves_module_untouched_warn_loads_the_rest():
    from mmseg_ovseg.utils.strict_load import StateDictMismatchError, load_state_dict_checked
    net, src = _bn_net(), _bn_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    state = dict(src.state_dict())
    state['2.weight'] = torch.zeros(7, 3)
    state['foo'] = torch.zeros(1)
    with pytest.raises(StateDictMismatchError, match=r'my.pth does not fit Sequential') as e:
        load_state_dict_checked(net, state, 'my.pth')
    assert "2.weight: checkpoint (7, 3) vs model (2, 3)" in str(e.value) and 'foo' in str(e.value)
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key]), key
    with pytest.warns(UserWarning, match=r'foo') as record:
        found = load_state_dict_checked(net, state, 'my.pth', on_mismatch='warn')
    assert '2.weight' in str(record[0].message) and found.unexpected == ['foo']
    for key, value in net.state_dict().items():
        expected = before[key] if key == '2.weight' else src.state_dict()[key]
        assert torch.equal(value, expected), key
    with pytest.raises(ValueError, match='on_mismatch'):
        load_state_dict_checked(net, state, 'my.pth', on_mismatch='quiet')
