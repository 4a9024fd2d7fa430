"""Export an open-vocabulary segmentor to ONNX with its vocabulary baked in.

    python tools/deploy/export_onnx.py configs/san_tiny_synthetic.py ckpt.pth \
        --classes "background,red circle,green square" --shape 128 128 \
        --out san_tiny.onnx --verify

The text tower is not exported: the class embeddings of ``--classes`` (with ``--templates``)
are computed once in PyTorch by the model's own (cached) text path and stored in the ONNX file
as a constant. The exported graph maps

    image   float32 (1, 3, H, W), RGB, 0..255 (no normalisation: the graph does it)
    ->  seg_logits  float32 (1, C, H, W), the scores of mmseg's whole-image inference
        (``model.encode_decode``: SAN's Eq. 4 scores, ZegCLIP's calibrated sigmoid scores,
        the baseline's logits); the class of a pixel is their argmax over C.

H and W are fixed at export time (``--shape``); see docs/deploy.md for the limits (slide
inference, resizing to the model's input size and the argmax stay outside the graph).

Supported: ``TextEncoderDecoder`` (the one-stage baseline), ``SAN`` and ``ZegCLIP``.
Errors are one line on stderr with exit status 2 (usage) or 1 (everything else).
"""
import argparse
import inspect
import os.path as osp
import sys
import time
import warnings
from typing import List, Optional, Tuple

HERE = osp.dirname(osp.abspath(__file__))
REPO_ROOT = osp.dirname(osp.dirname(HERE))
for _path in (REPO_ROOT, HERE):  # run from a checkout without `pip install -e .`; onnx_wrapper
    if _path not in sys.path:
        sys.path.insert(0, _path)

import numpy as np  # noqa: E402
import torch  # noqa: E402

# the traced wrapper, re-exported for tests and callers
from onnx_wrapper import ExportableSegmentor, adaptive_max_pool2d_static, san_scores  # noqa: E402,F401
from torch import Tensor  # noqa: E402

#: Segmentor classes whose whole-image path this exporter reproduces.
SUPPORTED = ('TextEncoderDecoder', 'SAN', 'ZegCLIP')
#: ONNX opset: 17 has LayerNormalization as one op (CLIP's ln_pre/ln_1/ln_2/ln_post).
DEFAULT_OPSET = 17


class UsageError(ValueError):
    """A bad command-line value (exit status 2)."""


# ---------------------------------------------------------------------- building
def build_model(config: str, checkpoint: Optional[str], random_weights: bool = False,
                cfg_options: Optional[dict] = None):
    """The segmentor of ``config`` in eval mode on CPU, with ``checkpoint`` loaded."""
    from mmengine.config import Config
    from mmengine.runner import load_checkpoint
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    import mmseg_ovseg  # noqa: F401  (registers the models)

    if not osp.isfile(config):
        raise UsageError(f'config file not found: {config}')
    if checkpoint is None and not random_weights:
        raise UsageError('no --checkpoint given; pass --random-weights to export an untrained '
                         'model on purpose')
    if checkpoint is not None and not osp.isfile(checkpoint):
        raise UsageError(f'checkpoint file not found: {checkpoint}')
    register_all_modules(init_default_scope=True)
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    model_type = cfg.model.get('type')
    if model_type not in SUPPORTED:
        raise UsageError(f'{config}: ONNX export supports {", ".join(SUPPORTED)}, not '
                         f'{model_type}')
    model = MODELS.build(cfg.model)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint, map_location='cpu', strict=True, logger='silent')
    model.cfg = cfg
    return model.eval()


def preprocessor_stats(model) -> Tuple[List[float], List[float], Optional[int]]:
    """RGB ``mean``, ``std`` and ``size_divisor`` (or None) of the model's preprocessor."""
    pre = model.data_preprocessor
    if not getattr(pre, '_enable_normalize', False):
        return [0.0] * 3, [1.0] * 3, None
    mean = pre.mean.flatten().tolist()
    std = pre.std.flatten().tolist()
    # The preprocessor's statistics are in the order of its output channels: RGB when
    # it swaps a BGR input (bgr_to_rgb), which is what our input is.
    cfg = model.cfg.model.get('data_preprocessor', {})
    divisor = (cfg.get('test_cfg') or {}).get('size_divisor')
    return mean, std, divisor


def default_shape(model) -> Tuple[int, int]:
    """The preprocessor's training crop size, else 512 x 512."""
    size = model.cfg.model.get('data_preprocessor', {}).get('size')
    return tuple(size) if size else (512, 512)


def make_exportable(model, classes=None, templates=None) -> ExportableSegmentor:
    """Switch ``model`` to ``classes`` and wrap it with their embeddings as a constant."""
    if classes is not None:
        model.set_vocabulary(classes, templates)
    elif templates is not None:
        model.set_vocabulary(model.vocabulary, templates)
    with torch.no_grad():
        embeds = model.class_embeddings
    mean, std, _ = preprocessor_stats(model)
    return ExportableSegmentor(model, embeds, mean, std).eval()


def export(wrapper: ExportableSegmentor, shape: Tuple[int, int], out: str,
           opset: int = DEFAULT_OPSET) -> None:
    """Write ``wrapper`` as ONNX for (1, 3, *shape) images (fixed size)."""
    dummy = torch.zeros(1, 3, *shape)
    with torch.no_grad(), warnings.catch_warnings():
        # shape checks of the modules become constants of the fixed-size trace: expected
        warnings.simplefilter('ignore', torch.jit.TracerWarning)
        # dynamo=False: the TorchScript exporter (no onnxscript dependency); the graph is
        # traced at this fixed size (the position-embedding resize and the mask upsampling
        # read the image size as Python ints).
        # (torch < 2.5 has no `dynamo` argument: its export is the TorchScript one.)
        legacy = {'dynamo': False} if 'dynamo' in inspect.signature(
            torch.onnx.export).parameters else {}
        torch.onnx.export(
            wrapper, (dummy, ), out, opset_version=opset, input_names=['image'],
            output_names=['seg_logits'], do_constant_folding=True, **legacy)
    _float_eyelike(out)


def _float_eyelike(path: str) -> int:
    """Rewrite boolean ``EyeLike`` nodes of the ONNX file as ``Cast`` + float ``EyeLike`` +
    ``Cast``.

    ``torch.eye(q, dtype=torch.bool)`` (the SLS tokens' own-column mask in SAN's attention
    mask) exports as ``EyeLike`` of a boolean ``ConstantOfShape``, and onnxruntime has no
    boolean ``EyeLike`` kernel.

    Returns:
        int: the number of nodes rewritten.
    """
    import onnx
    from onnx import TensorProto, helper, shape_inference

    model = onnx.load(path)
    inferred = shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type
             for v in list(inferred.graph.value_info) + list(inferred.graph.input)}
    nodes, changed = [], 0
    for node in model.graph.node:
        dtype = next((a.i for a in node.attribute if a.name == 'dtype'), None)
        if node.op_type != 'EyeLike' or (dtype if dtype is not None else types.get(
                node.input[0])) != TensorProto.BOOL:
            nodes.append(node)
            continue
        name = node.name or node.output[0]
        k = next((a.i for a in node.attribute if a.name == 'k'), 0)
        nodes += [
            helper.make_node('Cast', [node.input[0]], [name + '_in_float'],
                             name=name + '_cast_in', to=TensorProto.FLOAT),
            helper.make_node('EyeLike', [name + '_in_float'], [name + '_float'],
                             name=name + '_float', dtype=TensorProto.FLOAT, k=k),
            helper.make_node('Cast', [name + '_float'], list(node.output),
                             name=name + '_cast_out', to=TensorProto.BOOL),
        ]
        changed += 1
    if changed:
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        onnx.checker.check_model(model)
        onnx.save(model, path)
    return changed


def pytorch_scores(model, image_rgb: np.ndarray) -> Tensor:
    """(1, C, H, W) scores of the model's own path on an RGB uint8 (H, W, 3) image.

    The image goes through mmseg's ``SegDataPreProcessor`` (as the BGR array that mmseg's
    loader produces) and ``model.inference`` (whole mode), so the comparison also checks the
    graph's built-in normalisation.
    """
    from mmseg.structures import SegDataSample
    bgr = np.ascontiguousarray(image_rgb[..., ::-1])
    shape = image_rgb.shape[:2]
    sample = SegDataSample(metainfo=dict(img_shape=shape, ori_shape=shape))
    data = dict(inputs=[torch.from_numpy(bgr).permute(2, 0, 1).contiguous()],
                data_samples=[sample])
    with torch.no_grad():
        inputs = model.data_preprocessor(data, False)['inputs']
        size = tuple(inputs.shape[2:])
        if size != image_rgb.shape[:2]:
            raise ValueError(f'the preprocessor padded {image_rgb.shape[:2]} to {size}; '
                             'export a size divisible by its size_divisor')
        metas = [dict(img_shape=size, pad_shape=size, ori_shape=size)]
        mode = model.test_cfg.get('mode', 'whole')
        model.test_cfg['mode'] = 'whole'
        try:
            return model.inference(inputs, metas)
        finally:
            model.test_cfg['mode'] = mode


def onnx_scores(path: str, image_rgb: np.ndarray) -> np.ndarray:
    """(1, C, H, W) scores of the ONNX file under onnxruntime (CPU) on an RGB uint8 image."""
    import onnxruntime as ort
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    image = image_rgb.astype(np.float32).transpose(2, 0, 1)[None]
    return session.run(['seg_logits'], {'image': image})[0]


def compare(model, path: str, image_rgb: np.ndarray) -> dict:
    """Max |diff| of the scores and the fraction of pixels with the same argmax class."""
    ref = pytorch_scores(model, image_rgb).float().numpy()
    got = onnx_scores(path, image_rgb)
    if got.shape != ref.shape:
        raise ValueError(f'ONNX output {got.shape} != PyTorch {ref.shape}')
    return dict(
        max_abs_diff=float(np.abs(got - ref).max()),
        max_abs_score=float(np.abs(ref).max()),
        argmax_agreement=float((got.argmax(1) == ref.argmax(1)).mean()))


def load_image(path: str, shape: Tuple[int, int]) -> np.ndarray:
    """RGB uint8 (H, W, 3) image resized to ``shape`` (bilinear)."""
    from PIL import Image
    if not osp.isfile(path):
        raise UsageError(f'image file not found: {path}')
    img = Image.open(path).convert('RGB').resize((shape[1], shape[0]), Image.BILINEAR)
    return np.asarray(img)


# ---------------------------------------------------------------------- CLI
def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Export SAN / ZegCLIP / the baseline to ONNX with a fixed vocabulary')
    parser.add_argument('config', help='model config file')
    parser.add_argument('checkpoint', nargs='?', default=None, help='trained weights (.pth)')
    parser.add_argument('--out', required=True, help='output .onnx file')
    parser.add_argument('--classes', default=None,
                        help='comma-separated names, a .txt file (one per line) or a '
                        "vocabulary name; default: the model's training classes")
    parser.add_argument('--templates', default=None, help="prompt templates ('single', ...)")
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'), default=None,
                        help="input size (fixed in the graph); default: the config's crop")
    parser.add_argument('--opset', type=int, default=DEFAULT_OPSET)
    parser.add_argument('--random-weights', action='store_true',
                        help='export without a checkpoint (untrained model)')
    parser.add_argument('--verify', action='store_true',
                        help='run onnxruntime and PyTorch on one image and print the max '
                        '|diff| and the argmax agreement')
    parser.add_argument('--image', default=None,
                        help='image for --verify (resized to --shape); default: random')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing --out')
    parser.add_argument('--debug', action='store_true', help='full traceback on errors')
    return parser.parse_args(argv)


def _short_list(names: List[str], limit: int = 8) -> str:
    head = ', '.join(names[:limit])
    return head + (f', ... ({len(names)} in all)' if len(names) > limit else '')


def run(args) -> dict:
    if osp.exists(args.out) and not args.overwrite:
        raise UsageError(f'{args.out} exists; pass --overwrite to replace it')
    if args.shape is not None and min(args.shape) <= 0:
        raise UsageError(f'--shape must be positive, got {args.shape}')
    model = build_model(args.config, args.checkpoint, args.random_weights)
    try:
        wrapper = make_exportable(model, args.classes, args.templates)
    except (KeyError, ValueError, FileNotFoundError) as e:
        raise UsageError(f'--classes {args.classes!r}: {e}') from e
    shape = tuple(args.shape) if args.shape else default_shape(model)
    _, _, divisor = preprocessor_stats(model)
    if divisor and (shape[0] % divisor or shape[1] % divisor):
        raise UsageError(f'--shape {shape[0]} {shape[1]}: the model pads test images to a '
                         f'multiple of {divisor}; export a multiple of {divisor}')
    start = time.time()
    export(wrapper, shape, args.out, args.opset)
    print(f'wrote {args.out}: image (1, 3, {shape[0]}, {shape[1]}) -> seg_logits '
          f'(1, {len(model.vocabulary)}, {shape[0]}, {shape[1]}), classes '
          f'{_short_list(model.vocabulary)}, {time.time() - start:.1f}s')
    result = dict(classes=list(model.vocabulary), shape=shape)
    if args.verify:
        if args.image:
            image = load_image(args.image, shape)
        else:
            image = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
        result.update(compare(model, args.out, image))
        print(f"onnxruntime vs PyTorch: max |diff| {result['max_abs_diff']:.3g} "
              f"(max |score| {result['max_abs_score']:.3g}), argmax agreement "
              f"{100 * result['argmax_agreement']:.2f}%")
    return result


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except UsageError as e:
        if args.debug:
            raise
        print(f'export_onnx: error: {e}', file=sys.stderr)
        return 2
    except Exception as e:  # one line for the user; --debug for the traceback
        if args.debug:
            raise
        print(f'export_onnx: error: {type(e).__name__}: {e}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
