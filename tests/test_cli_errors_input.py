"""Bad input to the command-line tools that needs no trained checkpoint: image files and
folders, a CUDA device on a machine without CUDA, a malicious TorchScript-looking CLIP archive,
train.py's config / --resume / registry errors, test_ov.py's missing files, the one-line error
message and a converter's unexpected error: one line naming the problem, exit status 1, no
traceback (split from test_cli_errors.py; helpers imported from there)."""
import os
import textwrap
import zipfile

import numpy as np
import pytest
import torch

from mmseg_ovseg.utils.cli import error_message
from test_cli_errors import CONFIG, _infer_args, _png, _script, cli, error_line


def test_infer_py_bad_images(tmp_path, capsys):
    d = tmp_path / 'imgs'
    d.mkdir()
    (d / 'empty.png').write_bytes(b'')
    (d / 'noise.png').write_bytes(np.random.RandomState(0).bytes(1000))
    (d / 'none').mkdir()
    cases = {str(d / 'none'): ['no image files', 'in folder'],  # folders are inputs
             str(d / 'empty.png'): ['image file is empty (0 bytes)'],
             str(d / 'missing.png'): ['image file not found'],
             str(d / 'noise.png'): ['cannot decode image file']}
    for image, needles in cases.items():
        rc, _, err = cli('infer', _infer_args(tmp_path, image), capsys)
        error_line(rc, err, 'infer.py', image, *needles)


@pytest.mark.skipif(torch.cuda.is_available(), reason='needs a machine without CUDA')
def test_infer_py_cuda_without_cuda(tmp_path, capsys):
    image = _png(tmp_path / 'a.png')
    rc, _, err = cli('infer', _infer_args(tmp_path, image, extra=['--device', 'cuda:0']),
                     capsys)
    error_line(rc, err, 'infer.py', "device 'cuda:0'", 'CUDA is not available')
    rc, _, err = cli('infer', _infer_args(tmp_path, image, extra=['--device', 'gpu0']),
                     capsys)
    error_line(rc, err, 'infer.py', "invalid device 'gpu0'")


# ------------------------------------------- malicious TorchScript-looking CLIP archive
def test_malicious_clip_archive_refused_in_one_line(tmp_path, capsys):
    """A zip laid out like a TorchScript archive whose pickle would run a shell command: the
    model build refuses it, the CLI prints one line, and the command never runs."""
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, (f'touch {tmp_path}/pwned',))

    archive = tmp_path / 'ViT-B-16.pt'
    with zipfile.ZipFile(archive, 'w') as zf:
        zf.writestr('ViT-B-16/constants.pkl', pickle.dumps(Evil(), protocol=2))
        zf.writestr('ViT-B-16/data.pkl', pickle.dumps(Evil(), protocol=2))
        zf.writestr('ViT-B-16/code/__torch__.py', 'import os\n')
        zf.writestr('ViT-B-16/version', '3\n')
    config = tmp_path / 'evil_clip.py'
    config.write_text(textwrap.dedent(f'''
        _base_ = [{CONFIG!r}]
        model = dict(text_encoder=dict(pretrained={str(archive)!r}))
    '''))
    image = _png(tmp_path / 'a.png')
    rc, _, err = cli('infer', ['--config', config, '--images', image, '--out-dir',
                               tmp_path / 'out', '--random-weights'], capsys)
    error_line(rc, err, 'infer.py', str(archive), 'not a loadable TorchScript CLIP archive')
    assert not (tmp_path / 'pwned').exists()


def test_train_py_errors(tmp_path, capsys):
    rc, _, err = cli('train', [tmp_path / 'nope.py'], capsys)
    error_line(rc, err, 'train.py', 'config file not found', 'nope.py')
    rc, _, err = cli('train', [CONFIG, '--work-dir', tmp_path, '--resume',
                               tmp_path / 'nope.pth'], capsys)
    error_line(rc, err, 'train.py', '--resume checkpoint', 'nope.pth', 'not found')
    rc, _, err = cli('train', [CONFIG, '--work-dir', tmp_path, '--cfg-options',
                               'model.decode_head.type=NoSuchHead'], capsys)
    error_line(rc, err, 'train.py', 'NoSuchHead')


def test_test_ov_py_errors(tmp_path, capsys):
    """tools/test_ov.py goes through run_cli like the other tools: a missing config or
    checkpoint is one line naming the file."""
    rc, _, err = cli('test_ov', [tmp_path / 'nope.py', tmp_path / 'x.pth'], capsys)
    error_line(rc, err, 'test_ov.py', 'config file not found', 'nope.py')
    rc, _, err = cli('test_ov', [CONFIG, tmp_path / 'x.pth'], capsys)
    error_line(rc, err, 'test_ov.py', 'checkpoint file not found', 'x.pth')
    # the script itself is wired through run_cli: one line on stderr, no traceback
    proc = _script(['tools/test_ov.py', tmp_path / 'nope.py', tmp_path / 'x.pth'])
    error_line(proc.returncode, proc.stderr, 'test_ov.py', 'config file not found')
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_error_message_is_one_line():
    assert error_message(KeyError('x is not in the registry')) == 'x is not in the registry'
    assert error_message(RuntimeError('a\n  b\n')) == 'RuntimeError: a b'
    assert error_message(AssertionError()) == 'AssertionError'
    assert len(error_message(ValueError('x' * 5000))) <= 600


def test_converter_unexpected_error_is_one_line(tmp_path, capsys):
    """Converters (utils/converter_cli.run_converter): an error outside the converters' own
    KeyError/ValueError messages, here DST under a regular file, is one line too."""
    from mmseg_ovseg.utils.converter_cli import run_converter
    src = tmp_path / 'src.pth'
    torch.save(dict(state_dict=dict(w=torch.ones(2))), src)
    blocker = tmp_path / 'a_file'
    blocker.write_text('')
    argv = [str(src), str(blocker / 'dst.pth')]
    capsys.readouterr()
    rc = run_converter('identity', 'test', 'src', lambda state, args: state, argv)
    err = capsys.readouterr().err
    assert rc == 1 and 'Traceback' not in err
    assert err.strip().splitlines() == [f"error: FileExistsError: [Errno 17] File exists: "
                                        f"'{blocker}' (--debug for the traceback)"]
    rc = run_converter('identity', 'test', 'src', lambda state, args: state, argv + ['--debug'])
    assert rc == 1 and 'Traceback' in capsys.readouterr().err
