"""Open-vocabulary and referring inference on mmseg's ``MMSegInferencer``.

:class:`OpenVocabInferencer` is mmseg's inferencer (``BaseInferencer`` workflow: inputs to a
list, test pipeline, ``collate``, ``model.test_step``, visualisation, ``out_dir`` layout,
rich progress bar) for this package's models, with:

- ``classes=`` / ``templates=`` (and :meth:`~OpenVocabInferencer.set_vocabulary`): any list of
  class names for a :class:`~mmseg_ovseg.models.segmentors.TextEncoderDecoder` model, which
  holds the one class list (:attr:`~OpenVocabInferencer.classes` reads it) and its
  ``dataset_meta`` follows, so the pictures are labelled with the new names;
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
from mmseg.structures import SegDataSample

from .config import merge_cfg_options
from .draw import draw_legend, draw_sem_seg, make_palette  # noqa: F401  (re-exported)
from .inputs import list_images, output_stems, read_image, save_label
from .model import build_inference_model
from .overlay import DEFAULT_BACKGROUND, draw_overlay
from .palette import class_palette
from .vocabulary import check_sentences, out_of_vocabulary, with_background

ImageType = Union[str, np.ndarray]

__all__ = ['OpenVocabInferencer', 'ReferringInferencer', 'make_palette', 'draw_legend',
           'out_of_vocabulary']


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
        if classes is not None or templates is not None:
            self.set_vocabulary(classes, templates)

    # ------------------------------------------------------------------ model
    def _init_model(self, cfg, weights: Optional[str], device: str = 'cpu'):
        """:func:`~.model.build_inference_model`: the checkpoint guard, or ``init_weights``
        when there are no weights; ``dataset_meta`` set."""
        return build_inference_model(cfg, weights, device)

    def _init_collate(self, cfg):
        return pseudo_collate  # what mmseg's test loaders use

    @property
    def classes(self) -> List[str]:
        """The class names the labels index: the model's vocabulary (its
        ``dataset_meta['classes']`` for models without one)."""
        vocabulary = getattr(self.model, 'vocabulary', None)
        if vocabulary is not None:
            return list(vocabulary)
        return list(self.model.dataset_meta['classes'])

    @property
    def palette(self) -> List[List[int]]:
        """``[r, g, b]`` per class, keyed by class name."""
        return class_palette(self.classes)

    @property
    def is_referring(self) -> bool:
        """Whether the model segments by a sentence (ReSTR)."""
        return hasattr(self.model, 'language_encoder') and hasattr(self.model, 'sentences')

    def set_vocabulary(self, classes=None, templates=None) -> None:
        """Switch the model's vocabulary (list, comma-separated string, ``.txt`` path or
        registered name; None keeps it) and/or templates; a lone class gets ``background``
        (:func:`~.vocabulary.with_background`). The model holds the one class list
        (:attr:`classes` reads it); its ``dataset_meta`` follows."""
        if not hasattr(self.model, 'set_vocabulary'):
            what = 'segments by a sentence (use sentences=)' if self.is_referring else \
                'has a fixed set of classes (no set_vocabulary)'
            raise TypeError(f'{type(self.model).__name__} {what}; open vocabularies need a '
                            'TextEncoderDecoder config (SAN, ZegCLIP, the baseline, ...)')
        from mmseg_ovseg.clip.vocabularies import get_vocabulary
        names = self.classes if classes is None else with_background(get_vocabulary(classes))
        self.model.set_vocabulary(names, templates)

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

    read_image = staticmethod(read_image)

    def _check_sentences(self, sentences, count: int, oov: str) -> Optional[List[str]]:
        if not self.is_referring:
            if sentences is not None:
                raise TypeError(f'{type(self.model).__name__} segments into classes; '
                                'sentences= is for referring models (ReSTR); use classes=')
            return None
        if sentences is None:
            raise ValueError(f'{type(self.model).__name__} segments by a sentence: pass '
                             'sentences= (one for all images, or one per image)')
        return check_sentences(self.model.language_encoder, sentences, count, oov)

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
        want_picture = return_vis or show or bool(out_dir)
        results, pictures = [], []
        for item, pred in self._progress(self.iter_predictions(items, batch_size, sentences,
                                                               oov), len(items)):
            picture = self.draw(item, pred, **draw_kwargs) if want_picture else None
            name = self._output_name(item, stems)
            if out_dir:
                save_label(_labels(pred), osp.join(out_dir, pred_out_dir, f'{name}_pred.png'))
                mmcv.imwrite(mmcv.rgb2bgr(picture), osp.join(out_dir, img_out_dir,
                                                             f'{name}.png'))
            if show:
                self.visualizer.show(picture, win_name=name, wait_time=wait_time)
            results.append(pred if return_datasamples else _labels(pred))
            if return_vis:
                pictures.append(picture)
        return results if return_datasamples else _mmseg_dict(results, pictures)

    def _progress(self, stream, total: int):
        """``stream`` with mmengine's (rich) progress bar when ``show_progress``."""
        if not self.show_progress:
            return stream
        from rich.progress import track
        return track(stream, total=total, description='Inference')

    def _output_name(self, item: ImageType, stems: dict) -> str:
        """The output name of an input (its stem; arrays ``00000000``, ... as in mmseg);
        counts the prediction."""
        if isinstance(item, str):
            name = stems.get(item, osp.splitext(osp.basename(item))[0])
        else:
            name = str(self.num_pred_imgs).zfill(8)
        self.num_pred_imgs += 1
        return name

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


def _labels(pred: SegDataSample) -> np.ndarray:
    """``(H, W)`` class indices of a prediction, on the CPU."""
    return pred.pred_sem_seg.data[0].cpu().numpy()


def _mmseg_dict(results: list, pictures: list) -> dict:
    """mmseg's dict result: ``predictions`` and ``visualization``, a single one unwrapped."""
    if len(results) == 1:
        return dict(predictions=results[0], visualization=pictures[0] if pictures else [])
    return dict(predictions=results, visualization=pictures)
