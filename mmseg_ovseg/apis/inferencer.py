"""Open-vocabulary and referring inference on mmseg's ``MMSegInferencer``.

:class:`OpenVocabInferencer` is mmseg's inferencer (``BaseInferencer`` workflow: inputs to a
list, test pipeline, ``collate``, ``model.test_step``, visualisation, ``out_dir`` layout,
rich progress bar) for this package's models, with:

- ``classes=`` / ``templates=`` (and :meth:`~OpenVocabInferencer.set_vocabulary`): any list of
  class names for a :class:`~mmseg_ovseg.models.segmentors.TextEncoderDecoder` model; the
  model's ``dataset_meta`` follows, so the pictures are labelled with the new names;
- ``sentences=`` for referring models (ReSTR): words outside the model's word vocabulary are
  reported (an error by default) instead of silently becoming ``<unk>``;
- weights through the checkpoint guard (:mod:`mmseg_ovseg.utils.load_guard`); without a
  checkpoint the model's ``init_weights`` runs (CLIP weights from the config's files);
- folders (recursively), globs and list files as inputs (:func:`~.inputs.list_images`),
  clear errors for unreadable images, batches streamed through visualisation and saving;
- the overlay of :mod:`~mmseg_ovseg.apis.overlay` (image-scaled text, Unicode names, name-keyed
  colours, opacity, optional unpainted background).
"""
import copy
import os.path as osp
import warnings
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import mmcv
import numpy as np
import torch
from mmengine.config import Config
from mmengine.dataset import Compose, pseudo_collate
from mmengine.registry import init_default_scope
from mmseg.apis import MMSegInferencer
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from .config import merge_cfg_options
from .draw import draw_sem_seg  # noqa: F401  (mmseg's picture, re-exported for tools)
from .inputs import list_images, output_stems
from .overlay import DEFAULT_BACKGROUND, draw_overlay
from .palette import class_palette

ImageType = Union[str, np.ndarray]

__all__ = ['OpenVocabInferencer', 'ReferringInferencer', 'make_palette', 'draw_legend',
           'out_of_vocabulary']


def make_palette(num_classes: int, seed: int = 0) -> List[List[int]]:
    """A fixed, well-spread RGB colour per class index (golden-ratio hues).

    Index-keyed colours (the colour follows the position in the list); the inferencer's
    pictures use :func:`~mmseg_ovseg.apis.palette.class_palette` (keyed by name) instead.
    """
    import cv2
    rng = np.random.RandomState(seed)
    palette = []
    for i in range(num_classes):
        hue = int(((i * 0.618033988749895) % 1.0) * 180)
        sat, val = 160 + rng.randint(0, 96), 170 + rng.randint(0, 86)
        hsv = np.array([[[hue, sat, val]]], dtype=np.uint8)
        palette.append(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].tolist())
    return palette


def out_of_vocabulary(language_encoder, sentence: str) -> List[str]:
    """Words of ``sentence`` (split as the model splits them) that its word vocabulary lacks:
    the model would read each as ``<unk>``. Only words within its ``max_len`` count."""
    from mmseg_ovseg.models.language.word_vocab import split_words
    words = split_words(sentence)[:language_encoder.max_len]
    return list(dict.fromkeys(w for w in words if w not in language_encoder.vocab))


class OpenVocabInferencer(MMSegInferencer):
    """Segment images into any vocabulary (or by a sentence) with a model of this package.

    Args:
        config (str | Config): model config, e.g. ``configs/san_vitb16_coco-stuff.py``.
        checkpoint (str, optional): trained weights (or a work dir: the file its
            ``last_checkpoint`` names); it must fit the model exactly, with finite values
            (:mod:`mmseg_ovseg.utils.load_guard`). CLIP files named by the config are not read
            then. None: the model's ``init_weights`` (the config's CLIP files, random
            weights elsewhere).
        classes (str | list[str], optional): the vocabulary: a list of names, a
            comma-separated string, a ``.txt`` file (one name per line) or a registered name
            (:func:`~mmseg_ovseg.clip.vocabularies.get_vocabulary`). A single custom name is
            ``['cat']``. None keeps the model's (the training classes).
        templates (str | list[str], optional): prompt templates for the text encoder.
        device (str): ``'cpu'``, ``'cuda:0'``, ...; a device this machine lacks is refused.
        cfg_options (dict, optional): config overrides (``clip_pretrained=X`` sets every CLIP
            tower, :func:`~mmseg_ovseg.apis.config.merge_cfg_options`).
        show_progress (bool): a progress bar while calling (mmengine's, rich). Default False.

    Calling it (``inferencer(inputs, ...)``) takes a path, a folder (recursive), a glob, an
    ``(H, W, 3)`` uint8 BGR array (as ``cv2.imread``/mmseg's ``inference_model``) or a list of
    them, and returns a list of :class:`SegDataSample` (``pred_sem_seg``: indices into
    :attr:`classes`; ``seg_logits``), one per image, also for one input; with
    ``return_datasamples=False`` mmseg's dict (``predictions``, ``visualization``). See
    :meth:`__call__` for batching, ``out_dir`` and the picture options.
    """

    visualize_kwargs: set = {
        'show', 'wait_time', 'img_out_dir', 'opacity', 'return_vis', 'with_labels', 'legend',
        'draw_background'
    }

    def __init__(self,
                 config: Union[str, Config],
                 checkpoint: Optional[str] = None,
                 classes: Union[str, Sequence[str], None] = None,
                 templates: Union[str, Sequence[str], None] = None,
                 device: str = 'cpu',
                 cfg_options: Optional[dict] = None,
                 show_progress: bool = False):
        import mmseg_ovseg  # noqa: F401  (registers models, safe checkpoint globals)
        from mmseg_ovseg.utils.dist import check_device
        from mmseg_ovseg.utils.load_guard import resolve_checkpoint_path
        if isinstance(config, str):
            if not osp.isfile(config):
                raise FileNotFoundError(f'config file not found: {config}')
            config = Config.fromfile(config)
        elif not isinstance(config, Config):
            raise TypeError(f'config must be a path or a Config, got {type(config).__name__}')
        cfg = merge_cfg_options(copy.deepcopy(config), cfg_options)
        check_device(device)
        if checkpoint is not None:
            checkpoint = resolve_checkpoint_path(checkpoint)
        if cfg.get('visualizer') is None:  # MMSegInferencer needs one
            cfg.visualizer = dict(type='SegLocalVisualizer', name='ovseg_inferencer')
        self.device = device
        scope = cfg.get('default_scope', 'mmseg')
        init_default_scope(scope)
        with warnings.catch_warnings():
            # the configs' visualizer has a LocalVisBackend without save_dir: pictures are
            # written here, not through it
            warnings.filterwarnings('ignore', message='Failed to add')
            super().__init__(model=cfg, weights=checkpoint, device=device, scope=scope)
        self.show_progress = show_progress
        if classes is not None:
            self.set_vocabulary(classes, templates)
        elif templates is not None:
            self.set_vocabulary(self.classes, templates)

    # ------------------------------------------------------------------ model
    def _init_model(self, cfg, weights: Optional[str], device: str = 'cpu'):
        """Build the model; load ``weights`` through the checkpoint guard, or run
        ``init_weights`` when there are none; set ``dataset_meta``."""
        cfg.model.train_cfg = None
        model = MODELS.build(cfg.model)
        meta = {}
        if weights is not None:
            from mmseg_ovseg.utils.load_guard import load_checkpoint_checked
            meta = load_checkpoint_checked(model, weights, map_location='cpu').get('meta') or {}
        else:
            _quiet_init_weights(model)
        if not hasattr(type(model), 'dataset_meta'):  # models without a vocabulary property
            classes = (meta.get('dataset_meta') or {}).get('classes')
            if classes is None:
                classes = getattr(model, 'vocabulary', None)
            if classes is None and hasattr(model, 'language_encoder'):
                classes = ['background', 'object']  # referring: 1 = the sentence's object
            if classes is None:
                head = getattr(model, 'decode_head', None)
                classes = [str(i) for i in range(getattr(head, 'num_classes', 2))]
            model.dataset_meta = dict(classes=list(classes),
                                      palette=class_palette(list(classes)))
        model.cfg = cfg
        return model.to(device).eval()

    def _init_collate(self, cfg):
        return pseudo_collate  # what mmseg's test loaders use

    @property
    def classes(self) -> List[str]:
        """The class names the labels index."""
        return list(self.model.dataset_meta['classes'])

    @property
    def palette(self) -> List[List[int]]:
        """``[r, g, b]`` per class, keyed by class name."""
        return class_palette(self.classes)

    @property
    def is_referring(self) -> bool:
        """Whether the model segments by a sentence (ReSTR)."""
        return hasattr(self.model, 'language_encoder') and hasattr(self.model, 'sentences')

    def set_vocabulary(self, classes, templates=None) -> None:
        """Switch the vocabulary (list, comma-separated string, ``.txt`` path or registered
        name); the model's ``dataset_meta`` follows."""
        from mmseg_ovseg.clip.vocabularies import get_vocabulary
        names = get_vocabulary(classes)
        if len(names) == 1:
            # argmax over one class paints every pixel with it
            other = 'background' if names[0].strip().casefold() != 'background' else 'other'
            warnings.warn(f'one class {names[0]!r}: every pixel would be {names[0]!r}; '
                          f'{other!r} is added as class 0 (give two or more names to choose '
                          'the alternatives yourself)')
            names = [other] + names
        if not hasattr(self.model, 'set_vocabulary'):
            what = 'segments by a sentence (use sentences=)' if self.is_referring else \
                'has a fixed set of classes (no set_vocabulary)'
            raise TypeError(f'{type(self.model).__name__} {what}; open vocabularies need a '
                            'TextEncoderDecoder config (SAN, ZegCLIP, the baseline, ...)')
        self.model.set_vocabulary(names, templates)
        if not hasattr(type(self.model), 'dataset_meta'):
            self.model.dataset_meta = dict(classes=names, palette=class_palette(names))

    # --------------------------------------------------------------- pipeline
    def _init_pipeline(self, cfg) -> Compose:
        """The config's test pipeline with the image decoded here (so files and arrays get
        the same clear errors) and no annotation loading."""
        pipeline = cfg.get('test_pipeline')
        if pipeline is None:
            try:
                pipeline = cfg.test_dataloader.dataset.pipeline
            except AttributeError:
                raise KeyError('config has neither `test_pipeline` nor '
                               '`test_dataloader.dataset.pipeline`') from None
        skip = ('LoadAnnotations', 'LoadReferringAnnotation', 'LoadDepthAnnotation')
        pipeline = [copy.deepcopy(t) for t in pipeline if t.get('type') not in skip]
        if pipeline and 'LoadImage' in pipeline[0].get('type', ''):
            pipeline[0] = dict(type='LoadImageFromNDArray')
        else:
            pipeline.insert(0, dict(type='LoadImageFromNDArray'))
        return Compose(pipeline)

    def _inputs_to_list(self, inputs) -> list:
        """Paths (folders recursively, globs, ``.txt`` lists expanded) and arrays, in order."""
        if isinstance(inputs, (str, np.ndarray)):
            inputs = [inputs]
        out = []
        for item in inputs:
            if isinstance(item, np.ndarray):
                out.append(item)
            elif isinstance(item, str):
                out += list_images(item)
            else:
                raise TypeError(f'image must be a path or an (H, W, 3) uint8 array, got '
                                f'{type(item).__name__}')
        return out

    @staticmethod
    def read_image(image: ImageType) -> np.ndarray:
        """An ``(H, W, 3)`` uint8 BGR array from a path or an array; clear errors otherwise."""
        if isinstance(image, str):
            if osp.isdir(image):
                raise IsADirectoryError(f'image path is a directory, not an image file: '
                                        f'{image}')
            if not osp.isfile(image):
                raise FileNotFoundError(f'image file not found: {image}')
            if osp.getsize(image) == 0:
                raise ValueError(f'image file is empty (0 bytes): {image}')
            try:
                img = mmcv.imread(image, flag='color', channel_order='bgr')
            except Exception as e:  # noqa: BLE001  (decoders raise many types)
                raise ValueError(f'cannot decode image file {image}: {e}') from e
            if img is None or img.size == 0:
                raise ValueError(f'cannot decode image file: {image} (not an image format '
                                 'OpenCV/Pillow reads, or damaged)')
            return img
        if isinstance(image, np.ndarray):
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ValueError('image arrays must be (H, W, 3) uint8 (BGR), got shape '
                                 f'{image.shape} dtype {image.dtype}')
            if image.shape[0] == 0 or image.shape[1] == 0:
                raise ValueError(f'image array is empty: shape {image.shape}')
            return image
        raise TypeError(f'image must be a path or an (H, W, 3) uint8 array, got '
                        f'{type(image).__name__}')

    def _check_sentences(self, sentences, count: int, oov: str) -> Optional[List[str]]:
        if not self.is_referring:
            if sentences is not None:
                raise TypeError(f'{type(self.model).__name__} segments into classes; '
                                'sentences= is for referring models (ReSTR); use classes=')
            return None
        if sentences is None:
            raise ValueError(f'{type(self.model).__name__} segments by a sentence: pass '
                             'sentences= (one for all images, or one per image)')
        if isinstance(sentences, str):
            sentences = [sentences] * count
        sentences = list(sentences)
        if len(sentences) != count:
            raise ValueError(f'got {len(sentences)} sentences for {count} images (give one '
                             'for all images, or one per image)')
        if oov not in ('error', 'warn', 'ignore'):
            raise ValueError(f"oov must be 'error', 'warn' or 'ignore', got {oov!r}")
        encoder = self.model.language_encoder
        for sentence in dict.fromkeys(sentences):
            if not isinstance(sentence, str) or not sentence.strip():
                raise ValueError(f'empty or non-string sentence: {sentence!r}')
            unknown = out_of_vocabulary(encoder, sentence)
            if unknown and oov != 'ignore':
                msg = (f'sentence {sentence!r}: {len(unknown)} word(s) not in the model\'s '
                       f'word vocabulary ({encoder.vocab_file}, {len(encoder.vocab) - 2} '
                       f'words): {", ".join(repr(w) for w in unknown)}; the model would read '
                       'them as <unk>')
                if oov == 'error':
                    raise ValueError(msg + ". Rephrase, or pass oov='warn' (--oov warn) to "
                                     'run anyway')
                warnings.warn(msg)
            n = len(sentence.split())
            if n > encoder.max_len:
                warnings.warn(f'sentence {sentence!r} has more than {encoder.max_len} words; '
                              'the model reads the first ' + str(encoder.max_len))
        return sentences

    # -------------------------------------------------------------- inference
    def iter_predictions(self,
                         inputs,
                         batch_size: int = 1,
                         sentences: Union[str, Sequence[str], None] = None,
                         oov: str = 'error') -> Iterator[Tuple[ImageType, SegDataSample]]:
        """``(input, SegDataSample)`` per image, ``batch_size`` images per ``test_step``.

        Images of different sizes in one batch are padded to the largest by the data
        preprocessor (mmseg's batching); the padding is cropped from the predictions, but a
        whole-image model sees it, so for exact single-image results use ``batch_size=1``
        or batch images of one size.
        """
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f'batch_size must be a positive int, got {batch_size!r}')
        items = self._inputs_to_list(inputs)
        sentences = self._check_sentences(sentences, len(items), oov)
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            data = []
            for k, item in enumerate(chunk):
                results = dict(img=self.read_image(item))
                if sentences is not None:
                    results['sentence'] = sentences[start + k]
                data.append(self.pipeline(results))
            with torch.no_grad():
                preds = self.model.test_step(pseudo_collate(data))
            for item, pred in zip(chunk, preds):
                if isinstance(item, str):
                    pred.set_metainfo(dict(img_path=item))
                yield item, pred

    def __call__(self,
                 inputs,
                 return_datasamples: bool = True,
                 batch_size: int = 1,
                 return_vis: bool = False,
                 show: bool = False,
                 wait_time: int = 0,
                 out_dir: str = '',
                 img_out_dir: str = 'vis',
                 pred_out_dir: str = 'pred',
                 sentences: Union[str, Sequence[str], None] = None,
                 oov: str = 'error',
                 **kwargs):
        """Segment ``inputs``; mmseg's arguments, batches streamed to the outputs.

        Args:
            inputs: a path, folder (recursive), glob, ``.txt`` image list, BGR array, or a
                list of them.
            return_datasamples (bool): return a list of :class:`SegDataSample` (default; one
                per image, also for one input); False gives mmseg's dict (``predictions``:
                label maps, ``visualization``: pictures with ``return_vis``).
            batch_size (int): images per forward (see :meth:`iter_predictions`).
            return_vis, show, wait_time: mmseg's.
            out_dir (str): write ``out_dir/<pred_out_dir>/<name>_pred.png`` (class indices,
                uint16 beyond 256 classes) and ``out_dir/<img_out_dir>/<name>.png`` (the
                picture). ``<name>`` mirrors the input folders (two ``x.png`` in different
                folders do not collide); arrays are named ``00000000`` ... as in mmseg.
            sentences: the expression for a referring model, one for all or one per image.
            oov (str): words a referring model does not know: ``'error'`` (default),
                ``'warn'`` or ``'ignore'``.
            **kwargs: picture options: ``opacity`` (0.5), ``with_labels`` (True), ``legend``
                (True), ``draw_background`` (True).
        """
        unknown = set(kwargs) - self.visualize_kwargs
        if unknown:
            raise ValueError(f'unknown argument(s) {sorted(unknown)}')
        draw_kwargs = {k: kwargs[k] for k in ('opacity', 'with_labels', 'legend',
                                              'draw_background') if k in kwargs}
        items = self._inputs_to_list(inputs)
        paths = [p for p in items if isinstance(p, str)]
        stems = dict(zip(paths, output_stems(paths, ''))) if out_dir else {}
        samples, labels, pictures = [], [], []
        stream = self.iter_predictions(items, batch_size, sentences, oov)
        if self.show_progress:
            from rich.progress import track
            stream = track(stream, total=len(items), description='Inference')
        for item, pred in stream:
            want_picture = return_vis or show or bool(out_dir)
            picture = self.draw(item, pred, **draw_kwargs) if want_picture else None
            if isinstance(item, str):
                name = stems.get(item, osp.splitext(osp.basename(item))[0])
            else:
                name = str(self.num_pred_imgs).zfill(8)
            self.num_pred_imgs += 1
            if out_dir:
                label = pred.pred_sem_seg.data[0].cpu().numpy()
                save_label(label, osp.join(out_dir, pred_out_dir, f'{name}_pred.png'))
                mmcv.imwrite(mmcv.rgb2bgr(picture), osp.join(out_dir, img_out_dir,
                                                             f'{name}.png'))
            if show:
                self.visualizer.show(picture, win_name=name, wait_time=wait_time)
            if return_datasamples:
                samples.append(pred)
            else:
                labels.append(pred.pred_sem_seg.data[0].cpu().numpy())
            if return_vis:
                pictures.append(picture)
        if return_datasamples:
            return samples
        result = dict(predictions=labels, visualization=pictures)
        if len(labels) == 1:  # mmseg unwraps a single result
            result = dict(predictions=labels[0], visualization=pictures[0] if pictures else [])
        return result

    # ---------------------------------------------------------- visualisation
    def draw(self,
             image: ImageType,
             data_sample: SegDataSample,
             opacity: float = 0.5,
             with_labels: bool = True,
             legend: bool = True,
             draw_background: bool = True,
             background: Sequence[str] = DEFAULT_BACKGROUND) -> np.ndarray:
        """The RGB picture of one prediction (:func:`~mmseg_ovseg.apis.overlay.draw_overlay`):
        class colours keyed by name, names on the regions scaled to the image, a legend.
        For a referring model the object is labelled with its sentence."""
        rgb = mmcv.bgr2rgb(self.read_image(image))
        classes = self.classes
        if self.is_referring and 'sentence' in data_sample.metainfo:
            classes = [classes[0] if classes else 'background', data_sample.sentence]
        label_map = data_sample.pred_sem_seg.data[0].cpu().numpy()
        return draw_overlay(rgb, label_map, classes, class_palette(classes), opacity=opacity,
                            with_labels=with_labels, legend=legend,
                            draw_background=draw_background, background=background)

    def visualize(self, inputs, preds, out_file: Optional[str] = None, opacity: float = 0.5,
                  legend: bool = True, return_vis: bool = False, show: bool = False,
                  wait_time: int = 0, img_out_dir: str = '', with_labels: bool = True,
                  draw_background: bool = True):
        """Pictures of predictions.

        ``visualize(image, data_sample, out_file=None, ...)`` draws one prediction
        (:meth:`draw`), writes it to ``out_file`` if given and returns it (RGB).
        ``visualize(inputs, preds, ...)`` with lists is mmseg's signature: pictures written
        under ``img_out_dir`` by input name, returned with ``return_vis``.
        """
        opts = dict(opacity=opacity, with_labels=with_labels, legend=legend,
                    draw_background=draw_background)
        if isinstance(preds, SegDataSample):
            drawn = self.draw(inputs, preds, **opts)
            if out_file is not None:
                mmcv.imwrite(mmcv.rgb2bgr(drawn), out_file)
            return drawn
        if not show and not img_out_dir and not return_vis:
            return None
        results = []
        for item, pred in zip(inputs, preds):
            drawn = self.draw(item, pred, **opts)
            if isinstance(item, str):
                name = osp.splitext(osp.basename(item))[0] + '.png'
            else:
                name = f'{str(self.num_visualized_imgs).zfill(8)}_vis.png'
            if img_out_dir:
                mmcv.imwrite(mmcv.rgb2bgr(drawn), osp.join(img_out_dir, name))
            if show:
                self.visualizer.show(drawn, win_name=name, wait_time=wait_time)
            self.num_visualized_imgs += 1
            results.append(drawn)
        return results if return_vis else None


class ReferringInferencer(OpenVocabInferencer):
    """:class:`OpenVocabInferencer` for referring models (ReSTR): ``inferencer(images,
    sentences='the red circle')``; ``pred_sem_seg`` is 1 on the object. Out-of-vocabulary
    words are an error naming them (``oov='warn'`` runs anyway, reading them as ``<unk>``).
    :meth:`unknown_words` lists them for a sentence."""

    def __init__(self, config, checkpoint=None, device: str = 'cpu', cfg_options=None,
                 show_progress: bool = False):
        super().__init__(config, checkpoint, device=device, cfg_options=cfg_options,
                         show_progress=show_progress)
        if not self.is_referring:
            raise TypeError(f'{type(self.model).__name__} is not a referring model (no '
                            'language encoder); use OpenVocabInferencer with classes=')

    def unknown_words(self, sentence: str) -> List[str]:
        """Words of ``sentence`` the model's word vocabulary lacks (read as ``<unk>``)."""
        return out_of_vocabulary(self.model.language_encoder, sentence)


def _quiet_init_weights(model) -> None:
    """``model.init_weights()`` without mmengine's per-parameter INFO report (one log
    record per parameter saying it is unchanged)."""
    import logging

    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        model.init_weights()
    finally:
        logger.setLevel(level)


def save_label(label: np.ndarray, path: str) -> None:
    """Write class indices as a PNG (uint8, uint16 beyond 255)."""
    import os

    from PIL import Image
    os.makedirs(osp.dirname(path) or '.', exist_ok=True)
    dtype = np.uint8 if label.max(initial=0) < 256 else np.uint16
    Image.fromarray(label.astype(dtype)).save(path)


def draw_legend(image: np.ndarray, labels: Sequence[int], classes: Sequence[str],
                palette: Sequence[Sequence[int]]) -> np.ndarray:
    """The earlier fixed-size legend (ASCII, 16-pixel rows), kept for
    ``tools/analysis_tools/benchmark.py``'s comparison with the drawing before
    ``apis/draw.py``. The inferencer draws :func:`~mmseg_ovseg.apis.overlay.draw_overlay`."""
    import re

    import cv2
    h = image.shape[0]
    font, scale, thick = cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1
    row = 16
    names = [re.sub(r'[^\x20-\x7e]', '?', str(classes[i])) for i in labels]
    text_w = max([cv2.getTextSize(n, font, scale, thick)[0][0] for n in names] + [40])
    panel = np.full((max(h, row * len(labels) + 8), text_w + 30, 3), 255, np.uint8)
    for k, (label, name) in enumerate(zip(labels, names)):
        y = 4 + k * row
        color = tuple(int(c) for c in palette[label])
        cv2.rectangle(panel, (4, y), (16, y + 12), color, -1)
        cv2.rectangle(panel, (4, y), (16, y + 12), (0, 0, 0), 1)
        cv2.putText(panel, name, (22, y + 10), font, scale, (0, 0, 0), thick, cv2.LINE_AA)
    if panel.shape[0] > h:
        image = np.concatenate(
            [image, np.full((panel.shape[0] - h, ) + image.shape[1:], 255, np.uint8)])
    return np.concatenate([image, panel], axis=1)
