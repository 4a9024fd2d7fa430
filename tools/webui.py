"""A web page for open-vocabulary (or, with ReSTR, referring) segmentation of one image.

    pip install -e '.[web]'     # gradio
    python tools/webui.py --config configs/san_vitb16_coco-stuff.py --checkpoint ckpt.pth
    python tools/webui.py --random-weights          # try the tiny configs without weights

then open http://127.0.0.1:7860. Pick a config (the ``configs/*.py`` of this repository or a
path) and a checkpoint, upload an image, give the vocabulary and press *Segment*: the page
shows the overlay (``tools/infer.py``'s picture: name-keyed colours, names on the regions, a
legend) and a table of the area of every class found (class, pixels, % of the image).

Vocabulary, the syntax of ``tools/infer.py`` (both parse it with
:func:`mmseg_ovseg.apis.vocabulary.resolve_class_names`):
*Class names* are separated by commas or newlines (``cat`` is the single class "cat";
``background`` is then added as class 0); or choose a registered vocabulary (``ade150``, ...)
in *Vocabulary*; or leave both at the model's own classes. Referring configs (ReSTR) take
the *Sentence* instead; words outside the model's word vocabulary are refused by name.

Each (config, checkpoint) is built once and kept (the last ``--cache-size`` models); changing
the vocabulary re-encodes the class names only. A checkpoint is required unless the app was
started with ``--random-weights`` (the config's initialisation, as ``tools/infer.py
--random-weights``). Errors (no checkpoint, a config or checkpoint that does not load, an
unknown vocabulary, duplicate names, unknown words) are shown on the page as one line.

The logic is in plain functions (:func:`parse_vocabulary`, :class:`ModelCache`,
:func:`segment`, :func:`area_table`, :func:`run_request`) usable and tested without a browser
(``tests/test_webui.py``); :func:`build_app` wires them to a ``gradio.Blocks`` page.
"""
import argparse
import glob
import os.path as osp
import sys
import time
import traceback
import warnings
from typing import List, Optional, Sequence, Tuple

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO_ROOT not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, REPO_ROOT)

import numpy as np  # noqa: E402

from mmseg_ovseg.apis.inferencer_cache import InferencerCache  # noqa: E402
from mmseg_ovseg.apis.vocabulary import resolve_class_names  # noqa: E402

#: *Vocabulary* choices besides the registered vocabularies.
CUSTOM = 'class names (below)'
MODEL_CLASSES = "model's classes"
TABLE_HEADERS = ['class', 'pixels', '% of image']


# ----------------------------------------------------------------------------- inputs
def list_configs(root: str = REPO_ROOT) -> List[str]:
    """``configs/*.py`` of the repository, as paths relative to ``root``."""
    return sorted(osp.relpath(p, root) for p in glob.glob(osp.join(root, 'configs', '*.py')))


def vocabulary_choices() -> List[str]:
    """The *Vocabulary* dropdown: custom names, the model's classes, registered names."""
    from mmseg_ovseg.clip.vocabularies import list_vocabularies
    return [CUSTOM, MODEL_CLASSES] + list(list_vocabularies())


def parse_vocabulary(choice: Optional[str], class_text: Optional[str]) -> Optional[List[str]]:
    """The class names the page asks for, or None for the model's own classes.

    Args:
        choice: the *Vocabulary* dropdown: :data:`CUSTOM` (the names in ``class_text``),
            :data:`MODEL_CLASSES`, or a registered vocabulary name.
        class_text: the *Class names* box: names separated by commas or newlines.

    Parsed by :func:`mmseg_ovseg.apis.vocabulary.resolve_class_names` (what ``tools/infer.py``
    parses ``--classes`` and ``--vocabulary`` with); raises its one-line ValueError, naming
    the page's fields.
    """
    text = (class_text or '').strip()
    choice = choice or CUSTOM
    flags = dict(classes='Class names', classes_file='tools/infer.py --classes-file',
                 vocabulary='Vocabulary')
    if choice == MODEL_CLASSES:
        if text:
            raise ValueError("Class names and Vocabulary \"model's classes\" exclude each "
                             f'other; clear the names or choose {CUSTOM!r}')
        return None
    if choice == CUSTOM:
        if not text:
            raise ValueError('Class names: empty; type names separated by commas or '
                             "newlines, or choose a Vocabulary (\"model's classes\", "
                             'ade150, ...)')
        return resolve_class_names(classes=text, flags=flags)
    return resolve_class_names(classes=text or None, vocabulary=choice, flags=flags)


def resolve_path(path: Optional[str], what: str) -> Optional[str]:
    """``path`` stripped (None when empty); a relative path that does not exist from the
    working directory is tried from the repository root."""
    path = (path or '').strip().strip('"\'')
    if not path:
        return None
    path = osp.expanduser(path)
    if not osp.exists(path) and not osp.isabs(path) and \
            osp.exists(osp.join(REPO_ROOT, path)):
        path = osp.join(REPO_ROOT, path)
    if not osp.exists(path):
        raise FileNotFoundError(f'{what} not found: {path}')
    return path


# ----------------------------------------------------------------------------- models
class ModelCache(InferencerCache):
    """The page's :class:`~mmseg_ovseg.apis.inferencer_cache.InferencerCache`: paths as the
    page takes them (:func:`resolve_path`), a checkpoint required unless ``random_weights``,
    and each inferencer's ``default_classes`` (the classes it was built with).

    Args:
        random_weights (bool): allow no checkpoint (the config's initialisation); otherwise
            :meth:`get` without one is refused.
        device, cfg_options, size: :class:`InferencerCache`'s.
    """

    def __init__(self, random_weights: bool = False, device: str = 'cpu',
                 cfg_options: Optional[dict] = None, size: int = 2):
        super().__init__(device, cfg_options, size)
        self.random_weights = random_weights

    def get(self, config: Optional[str], checkpoint: Optional[str]):
        """The inferencer of ``config`` with ``checkpoint`` (built on first use)."""
        config = resolve_path(config, 'config file')
        if config is None:
            raise ValueError('no config: choose one of configs/*.py or type a path')
        checkpoint = resolve_path(checkpoint, 'checkpoint')
        if checkpoint is None and not self.random_weights:
            raise ValueError('no checkpoint: type the path of a trained .pth (or a work '
                             'dir); to try a config without one, start the app with '
                             '--random-weights')
        from mmseg_ovseg.utils.load_guard import resolve_checkpoint_path
        if checkpoint is not None:
            checkpoint = resolve_checkpoint_path(checkpoint)
        return super().get(config, checkpoint)

    def build(self, config: str, checkpoint: Optional[str]):
        inferencer = super().build(config, checkpoint)
        inferencer.default_classes = inferencer.classes
        return inferencer


# ----------------------------------------------------------------------------- inference
def segment(inferencer,
            image_rgb: np.ndarray,
            class_names: Optional[Sequence[str]] = None,
            sentence: Optional[str] = None,
            opacity: float = 0.5,
            draw_background: bool = True) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """Segment one image.

    Args:
        inferencer: an :class:`~mmseg_ovseg.apis.OpenVocabInferencer` (from
            :class:`ModelCache`).
        image_rgb: ``(H, W, 3)`` uint8, RGB (as the page uploads it).
        class_names: the vocabulary of a class model; None: the classes it was built with.
        sentence: the expression of a referring model (ReSTR).

    Returns:
        ``(overlay (H', W', 3) uint8 RGB with the legend, label map (H, W) int64, classes)``:
        the labels index ``classes`` (referring: ``[background, sentence]``).
    """
    image_rgb = np.asarray(image_rgb)
    if image_rgb.ndim == 2:
        image_rgb = np.repeat(image_rgb[..., None], 3, axis=2)
    if image_rgb.ndim == 3 and image_rgb.shape[2] == 4:  # RGBA: drop alpha
        image_rgb = image_rgb[..., :3]
    bgr = np.ascontiguousarray(image_rgb[..., ::-1]).astype(np.uint8)
    sentence = (sentence or '').strip() or None
    name = type(inferencer.model).__name__
    if inferencer.is_referring:
        if sentence is None:
            raise ValueError(f'{name} is a referring model: type a Sentence ("the red '
                             'circle on the left")')
        if class_names is not None:
            raise ValueError(f'{name} segments by a Sentence, not by class names: choose '
                             f"Vocabulary \"model's classes\" and clear the Class names")
    else:
        if sentence is not None:
            raise ValueError(f'the Sentence is for referring models (ReSTR); {name} '
                             'segments into classes: clear the Sentence')
        wanted = list(class_names) if class_names is not None else \
            list(getattr(inferencer, 'default_classes', inferencer.classes))
        if wanted != inferencer.classes:
            inferencer.set_vocabulary(wanted)
    (_, sample), = inferencer.iter_predictions([bgr], 1, sentence)
    label = sample.pred_sem_seg.data[0].cpu().numpy().astype(np.int64)
    classes = inferencer.classes
    if inferencer.is_referring:
        classes = [classes[0] if classes else 'background', sentence]
    overlay = inferencer.draw(bgr, sample, opacity=opacity, draw_background=draw_background)
    return overlay, label, list(classes)


def area_table(label: np.ndarray, classes: Sequence[str]) -> List[list]:
    """``[[class, pixels, % of image], ...]`` for every class present in ``label`` (the
    background included), largest first; percentages rounded to 2 decimals."""
    label = np.asarray(label)
    total = label.size
    if total == 0:
        return []
    counts = np.bincount(label.reshape(-1).astype(np.int64), minlength=len(classes))
    if counts.size > len(classes):
        raise ValueError(f'label map holds index {counts.size - 1}, but there are '
                         f'{len(classes)} classes')
    order = sorted(np.flatnonzero(counts), key=lambda i: (-counts[i], i))
    return [[str(classes[i]), int(counts[i]), round(100.0 * float(counts[i]) / total, 2)]
            for i in order]


def run_request(cache: ModelCache, config: Optional[str], checkpoint: Optional[str],
                image_rgb: Optional[np.ndarray], choice: Optional[str],
                class_text: Optional[str], sentence: Optional[str] = None,
                opacity: float = 0.5, draw_background: bool = True):
    """What *Segment* does: ``(overlay or None, table rows, status markdown)``.

    Every error becomes one line in the status (``**Error:** ...``), never a traceback on
    the page (errors other than bad input are also printed to stderr with the traceback).
    """
    from mmseg_ovseg.utils.cli import error_message
    start = time.time()
    try:
        if image_rgb is None:
            raise ValueError('no image: upload one first')
        inferencer = cache.get(config, checkpoint)
        class_names = None
        if not inferencer.is_referring:
            class_names = parse_vocabulary(choice, class_text)
        elif (class_text or '').strip():
            raise ValueError(f'{type(inferencer.model).__name__} segments by a Sentence, '
                             'not by class names: clear the Class names')
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            overlay, label, classes = segment(inferencer, image_rgb, class_names, sentence,
                                              opacity, draw_background)
    except Exception as e:  # noqa: BLE001  (every error is a line on the page)
        if not isinstance(e, (ValueError, FileNotFoundError, TypeError, KeyError)):
            traceback.print_exc()
        return None, [], f'**Error:** {error_message(e)}'
    notes = []
    for w in caught:  # ours only (e.g. "'background' is added as class 0"), once each
        text = ' '.join(str(w.message).split())
        if issubclass(w.category, UserWarning) and REPO_ROOT in osp.abspath(w.filename) \
                and 'site-packages' not in w.filename and text not in notes:
            notes.append(text)
    what = f'sentence: {classes[1]!r}' if inferencer.is_referring else \
        f'{len(classes)} classes: {", ".join(classes[:20])}' + \
        (f', ... ({len(classes) - 20} more)' if len(classes) > 20 else '')
    status = (f'{type(inferencer.model).__name__}, {label.shape[1]}x{label.shape[0]} px, '
              f'{time.time() - start:.1f} s; {what}')
    status += ''.join(f'\n\nNote: {n}' for n in notes)
    return overlay, area_table(label, classes), status


# ----------------------------------------------------------------------------- page
def build_app(cache: ModelCache, config: Optional[str] = None,
              checkpoint: Optional[str] = None, image: Optional[str] = None,
              class_text: str = '', vocabulary: str = CUSTOM, sentence: str = '',
              run_on_load: bool = False):
    """The ``gradio.Blocks`` page; *Segment* calls :func:`run_request` (API name
    ``/segment``: config, checkpoint, image, vocabulary, class names, sentence, opacity,
    draw background -> overlay, table, status).

    ``config`` ... ``sentence`` preset the fields (``image``: a file); ``run_on_load``
    segments once when the page opens (the docs' screenshot)."""
    import gradio as gr
    note = ('started with --random-weights: an empty checkpoint runs the config '
            'initialisation (random weights, CLIP files where the config names them)'
            if cache.random_weights else 'a checkpoint is required')
    with gr.Blocks(title='mmseg-ovseg: open-vocabulary segmentation',
                   analytics_enabled=False) as app:
        gr.Markdown('## mmseg-ovseg: open-vocabulary segmentation\nUpload an image, type '
                    'the class names (commas or newlines; or a registered vocabulary) -- '
                    f'or a sentence for a referring (ReSTR) config -- and press Segment. '
                    f'Device: {cache.device}; {note}.')
        with gr.Row():
            with gr.Column():
                inputs = _input_fields(gr, config, checkpoint, image, class_text, vocabulary,
                                       sentence)
                button = gr.Button('Segment', variant='primary')
            with gr.Column():
                outputs = [gr.Image(type='numpy', label='Overlay', format='png'),
                           gr.Dataframe(headers=TABLE_HEADERS,
                                        datatype=['str', 'number', 'number'],
                                        label='Area per class', interactive=False),
                           gr.Markdown()]

        def on_segment(config, checkpoint, image, choice, class_text, sentence, opacity,
                       draw_background):
            return run_request(cache, config, checkpoint, image, choice, class_text,
                               sentence, opacity, draw_background)

        button.click(on_segment, inputs=inputs, outputs=outputs, api_name='segment')
        if run_on_load:
            app.load(on_segment, inputs=inputs, outputs=outputs, api_name=False)
    return app


def _input_fields(gr, config, checkpoint, image, class_text, vocabulary, sentence) -> list:
    """The page's inputs, in :func:`run_request`'s order, preset as :func:`build_app` says."""
    configs = list_configs()
    if config and config not in configs:
        configs = [config] + configs
    fields = [
        gr.Dropdown(configs, value=config, label='Config', allow_custom_value=True,
                    info='configs/*.py or a path'),
        gr.Textbox(value=checkpoint or '', label='Checkpoint',
                   placeholder='work_dirs/.../iter_N.pth or a work dir'),
        gr.Image(value=image, type='numpy', image_mode='RGB', label='Image'),
        gr.Dropdown(vocabulary_choices(), value=vocabulary, label='Vocabulary'),
        gr.Textbox(value=class_text, label='Class names', lines=3,
                   placeholder='cat, dog, grass (commas or newlines)'),
        gr.Textbox(value=sentence, label='Sentence (referring configs: ReSTR)',
                   placeholder='the red circle on the left'),
    ]
    with gr.Row():
        fields += [gr.Slider(0.0, 1.0, value=0.5, step=0.05, label='Opacity'),
                   gr.Checkbox(value=True, label='Paint background')]
    return fields


def build_parser() -> argparse.ArgumentParser:
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        description='Web page for open-vocabulary (or referring) segmentation (gradio)',
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--config', default=None, help='config preselected on the page')
    parser.add_argument('--checkpoint', default=None,
                        help='checkpoint preselected on the page (.pth or a work dir)')
    parser.add_argument('--random-weights', action='store_true',
                        help='allow an empty checkpoint: the config initialisation')
    parser.add_argument('--device', default=None,
                        help="'cpu' or 'cuda:0' (default: cuda:0 when available)")
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys of every model, e.g. clip_pretrained=X')
    parser.add_argument('--image', default=None, help='image preselected on the page')
    parser.add_argument('--classes', default='',
                        help='class names preselected on the page (commas or newlines)')
    parser.add_argument('--vocabulary', default=None,
                        help="vocabulary preselected on the page: a registered name, or "
                        "'model' for the model's classes")
    parser.add_argument('--sentence', default='', help='sentence preselected on the page')
    parser.add_argument('--run-on-load', action='store_true',
                        help='segment the preselected image when the page opens')
    parser.add_argument('--cache-size', type=int, default=2, help='models kept in memory')
    parser.add_argument('--host', default='127.0.0.1',
                        help="address to listen on ('0.0.0.0': every interface)")
    parser.add_argument('--port', type=int, default=7860, help='port')
    parser.add_argument('--share', action='store_true', help="gradio's public share link")
    parser.add_argument('--debug', action='store_true',
                        help='on an error at start-up, print the full traceback')
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    import torch

    from mmseg_ovseg.utils.dist import check_device
    device = args.device or ('cuda:0' if torch.cuda.is_available() else 'cpu')
    check_device(device)
    if args.config is not None:
        resolve_path(args.config, 'config file')
    if args.checkpoint is not None:
        resolve_path(args.checkpoint, 'checkpoint')
    image = resolve_path(args.image, 'image') if args.image else None
    vocabulary = {None: CUSTOM, 'model': MODEL_CLASSES}.get(args.vocabulary, args.vocabulary)
    if vocabulary not in vocabulary_choices():
        raise ValueError(f'--vocabulary: unknown vocabulary {args.vocabulary!r}; known: '
                         f'model, {", ".join(vocabulary_choices()[2:])}')
    if args.cache_size < 1:
        raise ValueError(f'--cache-size must be >= 1, got {args.cache_size}')
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise ImportError("gradio is not installed: pip install -e '.[web]' (or pip install "
                          'gradio)') from None
    cache = ModelCache(args.random_weights, device, args.cfg_options, args.cache_size)
    app = build_app(cache, args.config, args.checkpoint, image, args.classes, vocabulary,
                    args.sentence, args.run_on_load)
    app.queue().launch(server_name=args.host, server_port=args.port, share=args.share)
    return app


if __name__ == '__main__':
    from mmseg_ovseg.utils.cli import run_cli
    sys.exit(run_cli(main, 'webui.py'))
