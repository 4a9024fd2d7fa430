"""Bad input to the command-line tools and the inferencer: one line naming the problem, exit
status 1, no traceback (unless --debug); checkpoints that do not fit the model are refused.

Every case runs a tool's ``main(argv)`` through :func:`mmseg_ovseg.utils.cli.run_cli` (as its
``__main__`` does) in this process; a few run the real script in a subprocess to check the
wiring of ``__main__``, the exit status and that stderr holds one line. The cases are listed in
docs/tools.md (*Errors*). The cases that need no trained checkpoint (images, CUDA, the
malicious CLIP archive, train.py, one-line messages) are in test_cli_errors_input.py."""
import logging
import os
import os.path as osp
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.runner.checkpoint import get_state_dict, weights_to_cpu

from mmseg_ovseg.datasets.synthetic import generate_synthetic_dataset
from mmseg_ovseg.utils.cli import run_cli
from mmseg_ovseg.utils.load_guard import CheckpointError, check_state_dict, load_checkpoint_checked
from tool_loader import load_tool

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = osp.join(REPO, 'configs')
CONFIG = osp.join(CONFIGS, 'baseline_tiny_synthetic.py')
OTHER_CONFIG = osp.join(CONFIGS, 'segvit_tiny_synthetic.py')  # another architecture
TINY_CONFIGS = sorted(f for f in os.listdir(CONFIGS) if f.endswith('_tiny_synthetic.py')
                      or f.endswith('_tiny_synthetic-zs.py'))
PY = sys.executable
_tools = {}


def tool(name):
    if name not in _tools:
        _tools[name] = load_tool(name)
    return _tools[name]


def _rebind_console_loggers():
    """mmengine's loggers outlive a test and keep writing to the stdout of the test that
    created them, which pytest has closed by now ('--- Logging error ---' with a traceback on
    stderr); point them at this test's stdout."""
    for logger in MMLogger._instance_dict.values():
        for handler in logger.handlers:
            if type(handler) is logging.StreamHandler:
                handler.stream = sys.stdout  # setStream would flush the closed one


def cli(name, argv, capsys):
    """Run tools/<name>.py's main through run_cli; return (status, stdout, stderr)."""
    _rebind_console_loggers()
    capsys.readouterr()
    rc = run_cli(tool(name).main, f"{name.split('/')[-1]}.py", [str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def error_line(rc, err, prog, *needles):
    """The one error line of a failed run; checks status, prefix, needles, no traceback."""
    assert rc == 1, err
    assert 'Traceback' not in err, err
    lines = [line for line in err.splitlines() if line.startswith(f'{prog}: error: ')]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def loader_opts(data_root):
    opts = []
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        opts += [f'{loader}.num_workers=0', f'{loader}.persistent_workers=False',
                 f'{loader}.dataset.data_root={data_root}']
    return opts


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('synthetic'))
    generate_synthetic_dataset(root, num_train=2, num_val=2, seed=0, size=32)
    return root


@pytest.fixture(scope='module')
def trained(data_root, tmp_path_factory):
    """A work dir with a checkpoint written by the Runner (1 iteration of the tiny config)."""
    work_dir = str(tmp_path_factory.mktemp('work'))
    opts = ['train_cfg.max_iters=1', 'train_cfg.val_interval=1000',
            'default_hooks.checkpoint.interval=1', 'train_dataloader.batch_size=1']
    rc = run_cli(tool('train').main, 'train.py',
                 [CONFIG, '--work-dir', work_dir, '--cfg-options'] + opts +
                 loader_opts(data_root))
    assert rc == 0
    ckpt = osp.join(work_dir, 'iter_1.pth')
    assert osp.isfile(ckpt), os.listdir(work_dir)
    return work_dir, ckpt


@pytest.fixture(scope='module')
def bad_ckpts(trained, tmp_path_factory):
    """Checkpoint files that must be refused, by case name."""
    _, good = trained
    d = tmp_path_factory.mktemp('bad')
    ckpt = torch.load(good, map_location='cpu', weights_only=False)
    files = {}

    def save(name, obj):
        files[name] = str(d / f'{name}.pth')
        torch.save(obj, files[name])

    from mmseg.registry import MODELS
    other = MODELS.build(Config.fromfile(OTHER_CONFIG).model)
    save('other_arch', dict(meta=ckpt['meta'], state_dict=weights_to_cpu(get_state_dict(other))))
    save('empty_state_dict', dict(meta=ckpt['meta'], state_dict={}))
    save('meta_only', dict(meta=ckpt['meta']))
    state = dict(ckpt['state_dict'])
    nan = {k: v.clone() for k, v in state.items()}
    nan['decode_head.proj.0.weight'].view(-1)[:3] = float('nan')
    nan['backbone.visual.conv1.weight'].view(-1)[0] = float('inf')
    save('nan', dict(meta=ckpt['meta'], state_dict=nan))
    missing = dict(state)
    del missing['decode_head.proj.0.bias']
    save('missing_key', dict(state_dict=missing))
    misshaped = dict(state)
    misshaped['decode_head.proj.0.bias'] = misshaped['decode_head.proj.0.bias'][:5]
    save('misshaped', dict(state_dict=misshaped))
    files['zero_bytes'] = str(d / 'zero.pth')
    open(files['zero_bytes'], 'wb').close()
    files['random_bytes'] = str(d / 'random.pth')
    with open(files['random_bytes'], 'wb') as f:
        f.write(np.random.RandomState(0).bytes(4096))
    files['truncated'] = str(d / 'truncated.pth')
    with open(good, 'rb') as f, open(files['truncated'], 'wb') as g:
        g.write(f.read()[:2000])
    files['directory'] = str(d / 'a_dir')
    os.mkdir(files['directory'])
    files['missing_file'] = str(d / 'nope.pth')
    empty_marker = d / 'work_empty_last'
    empty_marker.mkdir()
    (empty_marker / 'last_checkpoint').write_text('')
    files['empty_last_checkpoint'] = str(empty_marker)
    return files


# The problem each case must name (besides the path).
CKPT_CASES = {
    'other_arch': ['does not fit TextEncoderDecoder', 'another model', 'missing keys',
                   'unexpected keys'],
    'empty_state_dict': ['holds no weights', 'empty state_dict'],
    'meta_only': ['holds no weights', 'meta'],
    'nan': ['non-finite weights in 2 tensor(s)', 'decode_head.proj.0.weight (3 NaN, 0 inf)',
            'backbone.visual.conv1.weight (0 NaN, 1 inf)'],
    'missing_key': ['missing keys (1)', 'decode_head.proj.0.bias'],
    'misshaped': ['wrong shape (1)', 'decode_head.proj.0.bias: checkpoint (5,) vs model (64,)'],
    'zero_bytes': ['is empty (0 bytes)'],
    'random_bytes': ['not a PyTorch checkpoint'],
    'truncated': ['damaged or truncated zip'],
    'directory': ['is a directory', 'last_checkpoint'],
    'missing_file': ['checkpoint file not found'],
    'empty_last_checkpoint': ['last_checkpoint is empty'],
}


# ------------------------------------------------------------------------ load guard itself
@pytest.mark.parametrize('config', TINY_CONFIGS)
def test_runner_checkpoints_fit_their_model(config, tmp_path):
    """What the Runner saves (``weights_to_cpu(get_state_dict(model))``) passes the guard for
    every tiny config: frozen CLIP weights are saved, non-persistent buffers are not expected,
    so no legitimate checkpoint is refused."""
    from mmseg.registry import MODELS
    cfg = Config.fromfile(osp.join(CONFIGS, config))
    if 'language_encoder' in cfg.model:  # ReSTR: a word list instead of the dataset's
        (tmp_path / 'vocab.txt').write_text('red\ncircle\n')
        cfg.model.language_encoder.vocab_file = str(tmp_path / 'vocab.txt')
    model = MODELS.build(cfg.model)
    state = weights_to_cpu(get_state_dict(model))
    assert state.keys() == model.state_dict().keys()
    check_state_dict(model, state, config)


@pytest.mark.slow
def test_guard_loads_a_good_checkpoint_and_refuses_others(trained, bad_ckpts):
    from mmseg.registry import MODELS
    work_dir, good = trained
    model = MODELS.build(Config.fromfile(CONFIG).model)
    ckpt = load_checkpoint_checked(model, work_dir)  # a work dir: its last_checkpoint
    saved = torch.load(good, map_location='cpu', weights_only=False)['state_dict']
    for key, value in model.state_dict().items():
        assert torch.equal(value, saved[key]), key
    assert 'meta' in ckpt
    for case, needles in CKPT_CASES.items():
        with pytest.raises(CheckpointError) as info:
            load_checkpoint_checked(model, bad_ckpts[case])
        msg = str(info.value)
        assert '\n' not in msg
        for needle in needles:
            assert needle in msg, (case, needle, msg)


# ------------------------------------------------------------------------------ tools/test.py
@pytest.mark.parametrize('case', sorted(CKPT_CASES))
@pytest.mark.slow
def test_test_py_refuses_bad_checkpoint(case, bad_ckpts, data_root, capsys, tmp_path):
    rc, out, err = cli('test', [CONFIG, bad_ckpts[case], '--work-dir', tmp_path,
                                '--cfg-options'] + loader_opts(data_root), capsys)
    error_line(rc, err, 'test.py', *CKPT_CASES[case])
    assert 'Iter(test)' not in out  # nothing was evaluated


@pytest.mark.slow
def test_test_py_accepts_good_checkpoint_and_work_dir(trained, data_root, capsys, tmp_path):
    work_dir, ckpt = trained
    for path in (ckpt, work_dir):
        rc, out, err = cli('test', [CONFIG, path, '--work-dir', tmp_path, '--cfg-options'] +
                           loader_opts(data_root), capsys)
        assert rc == 0, err
        assert 'Iter(test)' in out and 'mIoU:' in out


@pytest.mark.slow
def test_test_py_debug_prints_traceback(bad_ckpts, data_root, capsys, tmp_path):
    rc, _, err = cli('test', [CONFIG, bad_ckpts['nan'], '--debug', '--work-dir', tmp_path,
                              '--cfg-options'] + loader_opts(data_root), capsys)
    assert rc == 1
    assert 'Traceback' in err and 'CheckpointError' in err
    assert err.strip().splitlines()[-1].startswith('test.py: error: checkpoint ')


@pytest.mark.slow
def test_test_py_traceback_goes_to_the_log(bad_ckpts, data_root, capsys, tmp_path):
    """The Runner's log file (work_dir/<timestamp>/<timestamp>.log) gets the traceback; the
    error line names it."""
    # its own experiment name: runners started in the same second share a logger here
    rc, _, err = cli('test', [CONFIG, bad_ckpts['other_arch'], '--work-dir', tmp_path,
                              '--cfg-options', 'experiment_name=log_test'] +
                     loader_opts(data_root), capsys)
    line = error_line(rc, err, 'test.py', 'traceback in ')
    log = line.split('traceback in ', 1)[1].split(';', 1)[0]
    assert log.startswith(str(tmp_path)) and log.endswith('.log')
    text = open(log).read()
    assert 'Traceback' in text and 'CheckpointError' in text


# ----------------------------------------------------------------------------- tools/infer.py
def _infer_args(tmp_path, *images, extra=()):
    if '--checkpoint' not in extra:
        extra = ['--random-weights', *extra]
    return ['--config', CONFIG, '--images', *images, '--classes', 'background,red circle',
            '--out-dir', tmp_path / 'out', *extra]


def _png(path, size=(16, 16)):
    os.makedirs(osp.dirname(str(path)), exist_ok=True)
    img = np.random.RandomState(0).randint(0, 255, (*size, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), img)
    return str(path)


@pytest.mark.slow
def test_infer_py_bad_checkpoint(bad_ckpts, tmp_path, capsys):
    image = _png(tmp_path / 'a.png')
    for case in ('other_arch', 'nan', 'random_bytes', 'empty_last_checkpoint'):
        rc, _, err = cli('infer', _infer_args(tmp_path, image, extra=[
            '--checkpoint', bad_ckpts[case]]), capsys)
        error_line(rc, err, 'infer.py', *CKPT_CASES[case])


@pytest.mark.slow
def test_infer_py_same_name_in_two_folders(trained, tmp_path, capsys):
    _, ckpt = trained
    a = _png(tmp_path / 'a' / 'x.png', (20, 30))
    b = _png(tmp_path / 'b' / 'x.png', (24, 18))
    tiny = _png(tmp_path / 'a' / 'one.png', (1, 1))
    rc, out, err = cli('infer', _infer_args(tmp_path, a, b, tiny, a,
                                            extra=['--checkpoint', ckpt]), capsys)
    assert rc == 0, err
    out_dir = tmp_path / 'out'
    for rel, shape in (('a/x', (20, 30)), ('b/x', (24, 18)), ('a/one', (1, 1))):
        label = cv2.imread(str(out_dir / f'{rel}_label.png'), cv2.IMREAD_UNCHANGED)
        assert label is not None and label.shape == shape, rel
        assert (out_dir / f'{rel}_overlay.png').is_file(), rel
        assert str(out_dir / f'{rel}_label.png') in out
    assert out.count('_label.png') == 3  # the repeated image is processed once
    # the same stem twice in one folder would still collide: refused before anything runs
    c = _png(tmp_path / 'a' / 'x.jpg')
    rc, _, err = cli('infer', _infer_args(tmp_path, a, c), capsys)
    error_line(rc, err, 'infer.py', 'would both write', 'x_label.png')


# -------------------------------------------------------------------- the inferencer (API)
@pytest.mark.slow
def test_inferencer_bad_arrays(trained):
    from mmseg_ovseg.apis import OpenVocabInferencer
    _, ckpt = trained
    inferencer = OpenVocabInferencer(CONFIG, ckpt)
    with pytest.raises(ValueError, match=r'image array is empty: shape \(0, 0, 3\)'):
        inferencer(np.zeros((0, 0, 3), np.uint8))
    with pytest.raises(ValueError, match=r'\(H, W, 3\) uint8'):
        inferencer(np.zeros((8, 8), np.uint8))
    one = inferencer(np.full((1, 1, 3), 200, np.uint8))[0]
    assert tuple(one.pred_sem_seg.data.shape[-2:]) == (1, 1)


# ------------------------------------------------------------------ get_flops, benchmark
@pytest.mark.slow
def test_get_flops_and_benchmark_errors(bad_ckpts, tmp_path, capsys):
    rc, _, err = cli('analysis_tools/get_flops', [tmp_path / 'nope.py'], capsys)
    error_line(rc, err, 'get_flops.py', 'config file not found')
    rc, _, err = cli('analysis_tools/get_flops', [CONFIG, '--checkpoint', bad_ckpts['other_arch'],
                                   '--shape', '32', '32'], capsys)
    error_line(rc, err, 'get_flops.py', *CKPT_CASES['other_arch'])
    rc, _, err = cli('analysis_tools/benchmark', [CONFIG, '--checkpoint', bad_ckpts['zero_bytes'],
                                   '--shape', '32', '32', '--runs', '1', '--warmup', '0'],
                     capsys)
    error_line(rc, err, 'benchmark.py', *CKPT_CASES['zero_bytes'])
    if not torch.cuda.is_available():
        rc, _, err = cli('analysis_tools/benchmark',
                         [CONFIG, '--device', 'cuda:0', '--shape', '32', '32'], capsys)
        error_line(rc, err, 'benchmark.py', 'CUDA is not available')


# ------------------------------------------------------------- the real scripts (subprocess)
def _script(args, **kw):
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS='1')
    env.pop('OVSEG_DEBUG', None)
    proc = subprocess.run([PY] + [str(a) for a in args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=300, **kw)
    return proc


@pytest.mark.slow
def test_scripts_print_one_line(bad_ckpts, data_root, tmp_path):
    proc = _script(['tools/test.py', CONFIG, bad_ckpts['other_arch'], '--work-dir', tmp_path,
                    '--cfg-options'] + loader_opts(data_root))
    assert proc.returncode == 1
    assert 'Traceback' not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(
        f'test.py: error: checkpoint {bad_ckpts["other_arch"]} does not fit')
    empty = tmp_path / 'no_images'
    empty.mkdir()
    proc = _script(['tools/infer.py', '--config', CONFIG, '--images', empty,
                    '--out-dir', tmp_path / 'out', '--random-weights'])
    assert proc.returncode == 1
    assert proc.stderr.strip() == (f'infer.py: error: no image files (.jpg, .jpeg, .png, '
                                   f'.bmp, ...) in folder {empty} (--debug for the '
                                   'traceback)')
    proc = _script(['tools/infer.py', '--config', CONFIG, '--images', empty])
    assert proc.returncode == 2  # a usage error: argparse's status
    assert proc.stderr.strip().startswith('infer.py: error: --checkpoint is required')
    assert len(proc.stderr.strip().splitlines()) == 1
