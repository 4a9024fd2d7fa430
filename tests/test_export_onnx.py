"""tools/deploy/export_onnx.py: SAN, ZegCLIP and the baseline in ONNX with a baked vocabulary;
onnxruntime must agree with the PyTorch model's own inference on the same image."""
import os.path as osp

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tool_loader import REPO, load_tool

onnx = pytest.importorskip('onnx', reason='onnx is not installed (pip install -e .[export])')
ort = pytest.importorskip('onnxruntime',
                          reason='onnxruntime is not installed (pip install -e .[export])')

export_onnx = load_tool('deploy/export_onnx')
CONFIGS = ['baseline_tiny_synthetic', 'san_tiny_synthetic', 'zegclip_tiny_synthetic-zs']
# Not the training vocabulary: the baked classes must be the requested ones.
CLASSES = 'background,red circle,sky,green square'


def config(name):
    return osp.join(REPO, 'configs', f'{name}.py')


@pytest.mark.parametrize('name', CONFIGS)
@pytest.mark.slow
def test_onnxruntime_agrees_with_pytorch(name, tmp_path):
    model = export_onnx.build_model(config(name), None, random_weights=True)
    wrapper = export_onnx.make_exportable(model, CLASSES)
    assert model.vocabulary == CLASSES.split(',')
    out = str(tmp_path / f'{name}.onnx')
    export_onnx.export(wrapper, (128, 128), out)

    rng = np.random.default_rng(0)
    # smooth blobs rather than noise: scores with clear winners, as real images give
    image = F.interpolate(torch.from_numpy(rng.random((1, 3, 8, 8))).float(), size=(128, 128),
                          mode='bilinear', align_corners=False)
    image = (image[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    ref = export_onnx.pytorch_scores(model, image).numpy()  # mmseg preprocessor + inference
    got = export_onnx.onnx_scores(out, image)
    assert got.shape == ref.shape == (1, 4, 128, 128)
    scale = max(1.0, float(np.abs(ref).max()))
    assert np.abs(got - ref).max() <= 1e-4 * scale
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.999

    graph = onnx.load(out).graph
    # one input, the image: the vocabulary is a constant, not an input
    assert [i.name for i in graph.input] == ['image']
    dims = [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 128, 128]
    # the text tower is not in the file: no token embedding (vocab_size x width) initializer
    text_vocab = model.cfg.model.text_encoder.clip_model['text_cfg']['vocab_size']
    assert not any(text_vocab in tuple(init.dims) for init in graph.initializer)
    # the graph is fixed-size: another size is refused rather than silently mis-computed
    session = ort.InferenceSession(out, providers=['CPUExecutionProvider'])
    with pytest.raises(Exception, match='(?i)dimension|shape'):
        session.run(None, {'image': np.zeros((1, 3, 96, 128), np.float32)})


@pytest.mark.parametrize('in_hw,out_hw', [((16, 16), (8, 8)), ((40, 40), (32, 32)),
                                          ((7, 9), (3, 4)), ((5, 5), (5, 5))])
def test_static_adaptive_max_pool_equals_pytorch(in_hw, out_hw):
    x = torch.randn(2, 6, *in_hw)
    expected = F.adaptive_max_pool2d(x, out_hw)
    assert torch.equal(export_onnx.adaptive_max_pool2d_static(x, out_hw), expected)


@pytest.mark.slow
def test_cli_exports_and_verifies(tmp_path, capsys):
    out = tmp_path / 'baseline.onnx'
    argv = [config('baseline_tiny_synthetic'), '--random-weights', '--out', str(out),
            '--classes', 'cat,dog', '--verify']
    assert export_onnx.main(argv) == 0
    printed = capsys.readouterr().out
    assert 'argmax agreement 100.00%' in printed
    assert out.is_file()
    # an existing file is not replaced without --overwrite
    assert export_onnx.main(argv) == 2
    assert 'exists' in capsys.readouterr().err


@pytest.mark.parametrize('argv,message', [
    (['--out', 'x.onnx'], 'no --checkpoint'),
    (['missing.pth', '--out', 'x.onnx'], 'checkpoint file not found: missing.pth'),
    (['--random-weights', '--out', 'x.onnx', '--shape', '100', '128'], 'multiple of 16'),
])
def test_cli_usage_errors(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert export_onnx.main([config('san_tiny_synthetic')] + argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / 'x.onnx').exists()


def test_cli_refuses_unsupported_models(tmp_path, capsys):
    argv = [config('denseclip_tiny_synthetic'), '--random-weights', '--out',
            str(tmp_path / 'x.onnx')]
    assert export_onnx.main(argv) == 2
    assert 'supports TextEncoderDecoder, SAN, ZegCLIP, not DenseCLIP' in capsys.readouterr().err
