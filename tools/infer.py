"""Segment images into any list of class names (or, with ReSTR, by a sentence).

    python tools/infer.py --config configs/san_vitb16_coco-stuff.py --checkpoint ckpt.pth \
        --images photos/ 'more/*.jpg' list.txt --classes cat,dog,grass --out-dir out/

Inputs (``--images``): files, folders (recursively), glob patterns and ``.txt`` lists (one
path per line). Vocabulary, one of (default: the model's training classes):

- ``--classes cat,dog,grass``: class names separated by commas or newlines; always names,
  so ``--classes cat`` is the single class "cat" (a lone class gets ``background`` added as
  class 0, since an argmax over one class paints every pixel with it);
- ``--classes-file names.txt``: one name per line (names may contain commas);
- ``--vocabulary ade150``: a registered vocabulary (ade150, ade847, coco_stuff171, pc59,
  pc459, voc20, synthetic, concepts).

``--sentence "the man on the left"`` drives a referring model (ReSTR); words outside its word
vocabulary stop the run with their names (``--oov warn`` runs anyway, reading them as
``<unk>``).

For every image writes ``<out-dir>/<name>_label.png`` (class indices into the printed classes;
uint16 beyond 256 classes) and ``<out-dir>/<name>_overlay.png`` (the prediction over the
image: name-keyed colours, names on the regions and a legend, text sized to the image) and
prints their paths. Only the labels are kept (``test_cfg.keep_logits=False`` for this package's
class segmentors: no full-size ``(C, H, W)`` score map, the same labels; docs/benchmarks.md,
large images); ``--cfg-options model.test_cfg.keep_logits=True`` keeps the scores. Images from
several folders keep their folders below their common parent
(``a/x.png`` and ``b/x.png`` write ``out/a/x_*.png`` and ``out/b/x_*.png``). Existing files
are not overwritten without ``--overwrite``.

A checkpoint is required; ``--random-weights`` runs without one (the config's initialisation:
CLIP towers from their ``pretrained`` files, ``--cfg-options clip_pretrained=...``, random
elsewhere). Usage errors (no checkpoint, conflicting or empty vocabulary options, an unknown
vocabulary name, a sentence for a class model) exit with status 2, as argparse does; other
errors (a missing, empty or undecodable image, a folder without images, a checkpoint that does
not fit, an unknown word, an existing output) exit with status 1. Each is one line on stderr;
``--debug`` adds the traceback.
"""
import argparse
import os
import os.path as osp
import sys
import warnings

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO_ROOT not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, REPO_ROOT)

import numpy as np  # noqa: E402


class OutputExistsError(FileExistsError, ValueError):
    """An output file exists and ``--overwrite`` was not given."""


class OneLineParser(argparse.ArgumentParser):
    """argparse with its usage errors on one line (``infer.py: error: ...``), status 2."""

    def error(self, message):
        usage_error(message)


def usage_error(message: str) -> None:
    """Print ``infer.py: error: <message> (see --help)`` and exit with status 2."""
    print(f'infer.py: error: {message} (see --help)', file=sys.stderr, flush=True)
    raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    from mmengine.config import DictAction
    parser = OneLineParser(
        description='Open-vocabulary (or referring) segmentation of images',
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--config', required=True, help='model config file')
    parser.add_argument('--checkpoint', default=None,
                        help='trained weights (.pth) or a work dir (its last_checkpoint)')
    parser.add_argument('--random-weights', action='store_true',
                        help='run without a checkpoint: the config initialisation (CLIP '
                        'files where the config names them, random weights elsewhere)')
    parser.add_argument('--image', '--images', dest='images', nargs='+', required=True,
                        metavar='PATH', help='image files, folders (recursive), glob patterns '
                        '(quoted) or .txt lists of paths')
    vocab = parser.add_mutually_exclusive_group()
    vocab.add_argument('--classes', default=None, metavar='NAMES',
                       help='class names separated by commas or newlines ("cat,dog,grass"; '
                       '"cat" is one class)')
    vocab.add_argument('--classes-file', default=None, metavar='FILE',
                       help='a text file with one class name per line')
    vocab.add_argument('--vocabulary', default=None, metavar='NAME',
                       help='a registered vocabulary (ade150, coco_stuff171, ...)')
    vocab.add_argument('--sentence', default=None,
                       help='the referring expression, for referring models (ReSTR)')
    parser.add_argument('--oov', choices=['error', 'warn'], default='error',
                        help='words a referring model does not know: stop (default) or warn '
                        'and read them as <unk>')
    parser.add_argument('--templates', default=None,
                        help="prompt templates: 'vild', 'imagenet', 'single', ...")
    parser.add_argument('--out-dir', default='infer_out', help='output directory')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace existing output files')
    parser.add_argument('--batch-size', type=int, default=1,
                        help='images per forward (images of different sizes are padded to '
                        'the largest of their batch; 1 gives exact per-image results)')
    parser.add_argument('--device', default='cpu', help="'cpu' or 'cuda:0'")
    parser.add_argument('--opacity', type=float, default=0.5, help='overlay opacity in [0, 1]')
    parser.add_argument('--no-background', action='store_true',
                        help="leave the class named 'background' unpainted")
    parser.add_argument('--no-legend', action='store_true', help='no legend panel')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys, e.g. clip_pretrained=ViT-B-16.pt')
    parser.add_argument('--debug', action='store_true',
                        help='on an error, print the full traceback (default: one line)')
    return parser


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.checkpoint is None and not args.random_weights:
        parser.error('--checkpoint is required (a trained .pth or a work dir); pass '
                     '--random-weights to run on the config initialisation instead')
    if args.checkpoint is not None and args.random_weights:
        parser.error('--checkpoint and --random-weights exclude each other')
    if args.batch_size < 1:
        parser.error(f'--batch-size must be >= 1, got {args.batch_size}')
    if not 0.0 <= args.opacity <= 1.0:
        parser.error(f'--opacity must be in [0, 1], got {args.opacity}')
    from mmseg_ovseg.apis.vocabulary import resolve_class_names
    try:
        args.class_names = resolve_class_names(args.classes, args.classes_file,
                                               args.vocabulary)
    except ValueError as e:
        parser.error(str(e))
    if args.sentence is not None and not args.sentence.strip():
        parser.error('--sentence is empty')
    return args


def planned_outputs(stems):
    return [f'{stem}_{kind}.png' for stem in stems for kind in ('label', 'overlay')]


KEEP_LOGITS_KEY = 'model.test_cfg.keep_logits'


def drop_logits(model, cfg_options=None) -> bool:
    """Set ``model.test_cfg.keep_logits = False`` where the segmentor supports it (this
    package's :class:`TextEncoderDecoder` and its subclasses) and ``--cfg-options`` does not
    set it: this tool writes the labels and the overlay only, so the full-size ``(C, H, W)``
    scores need not be kept (the labels are the same). Returns whether it was set."""
    from mmseg_ovseg.models.segmentors import TextEncoderDecoder
    options = cfg_options or {}
    chosen = KEEP_LOGITS_KEY in options or 'keep_logits' in (options.get('model.test_cfg')
                                                             or {})
    if chosen or not isinstance(model, TextEncoderDecoder):
        return False
    model.test_cfg.keep_logits = False
    return True


def main(argv=None):
    args = parse_args(argv)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        try:
            return run(args)
        finally:
            shown = set()
            for w in caught:  # one line each, once
                text = ' '.join(str(w.message).split())
                if issubclass(w.category, UserWarning) and text not in shown and \
                        _ours(w.filename):
                    shown.add(text)
                    print(f'infer.py: warning: {text}', file=sys.stderr)


def _ours(filename: str) -> bool:
    """Warnings of this package only (not mmseg's deprecation notes)."""
    path = osp.abspath(filename)
    return path.startswith(REPO_ROOT) and 'site-packages' not in path


def run(args):
    """Segment ``args.images`` and write the labels and overlays; returns the written paths."""
    from mmseg_ovseg.apis.inputs import list_images, output_stems
    # Fail on a bad path or an existing output before the (slow) model build.
    images = list_images(args.images)
    stems = output_stems(images, args.out_dir)
    if not args.overwrite:
        existing = [p for p in planned_outputs(stems) if osp.exists(p)]
        if existing:
            more = f' and {len(existing) - 1} more' if len(existing) > 1 else ''
            raise OutputExistsError(f'output {existing[0]}{more} already exist(s); pass '
                                    '--overwrite to replace, or choose another --out-dir')
    inferencer = build_inferencer(args)
    return write_predictions(inferencer, args, images, stems)


def build_inferencer(args):
    """The inferencer of ``args``, set to the asked vocabulary (or sentence checks)."""
    from mmseg_ovseg.apis import OpenVocabInferencer
    from mmseg_ovseg.utils.dist import check_device
    from mmseg_ovseg.utils.load_guard import resolve_checkpoint_path

    check_device(args.device)
    checkpoint = None if args.checkpoint is None else resolve_checkpoint_path(args.checkpoint)
    inferencer = OpenVocabInferencer(args.config, checkpoint, device=args.device,
                                     cfg_options=args.cfg_options)
    drop_logits(inferencer.model, args.cfg_options)
    name = type(inferencer.model).__name__
    if inferencer.is_referring:
        if args.sentence is None:
            usage_error(f'{name} is a referring model: give --sentence "..." (not --classes)')
        print(f'sentence: {args.sentence}')
        return inferencer
    if args.sentence is not None:
        usage_error(f'--sentence is for referring models (ReSTR); {name} segments into '
                    'classes: use --classes, --classes-file or --vocabulary')
    if args.class_names is not None or args.templates is not None:
        inferencer.set_vocabulary(args.class_names, args.templates)  # None: the model's
    print(f'classes ({len(inferencer.classes)}): {", ".join(inferencer.classes)}')
    return inferencer


def write_predictions(inferencer, args, images, stems):
    """``<stem>_label.png`` and ``<stem>_overlay.png`` per image, their paths printed."""
    from mmseg_ovseg.apis.inputs import save_label
    stream = inferencer.iter_predictions(images, args.batch_size, args.sentence,
                                         oov=args.oov)
    progress = None
    if not args.no_progress:
        from tqdm import tqdm
        progress = tqdm(total=len(images), desc='infer', unit='img', file=sys.stderr,
                        disable=None, leave=False)
    written = []
    stem_of = dict(zip(images, stems))
    try:
        for path, sample in stream:
            stem = stem_of[path]
            os.makedirs(osp.dirname(stem) or '.', exist_ok=True)
            label_file, overlay_file = f'{stem}_label.png', f'{stem}_overlay.png'
            save_label(sample.pred_sem_seg.data[0].cpu().numpy().astype(np.int64),
                       label_file)
            inferencer.visualize(path, sample, overlay_file, opacity=args.opacity,
                                 legend=not args.no_legend,
                                 draw_background=not args.no_background)
            if progress is not None:
                progress.update(1)
            print(label_file)
            print(overlay_file)
            written += [label_file, overlay_file]
    finally:
        if progress is not None:
            progress.close()
    return written


if __name__ == '__main__':
    from mmseg_ovseg.utils.cli import run_cli
    sys.exit(run_cli(main, 'infer.py'))
