"""Open-vocabulary inference: image(s) + any list of class names -> label maps and pictures."""
import copy
import os.path as osp
import re
from typing import List, Optional, Sequence, Union

import cv2
import mmcv
import numpy as np
import torch
from mmengine.config import Config
from mmengine.dataset import Compose
from mmengine.registry import init_default_scope

from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from .draw import draw_sem_seg

ImageType = Union[str, np.ndarray]

__all__ = ['OpenVocabInferencer', 'make_palette']


def make_palette(num_classes: int, seed: int = 0) -> List[List[int]]:
    """A fixed, well-spread RGB colour per class index (golden-ratio hues)."""
    rng = np.random.RandomState(seed)
    palette = []
    for i in range(num_classes):
        hue = int(((i * 0.618033988749895) % 1.0) * 180)
        sat, val = 160 + rng.randint(0, 96), 170 + rng.randint(0, 86)
        hsv = np.array([[[hue, sat, val]]], dtype=np.uint8)
        palette.append(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].tolist())
    return palette


class OpenVocabInferencer:
    """Segment images into an arbitrary vocabulary with a trained (or CLIP-initialised) model.

    Args:
        config (str | Config): model config (an mmseg-ovseg config such as
            ``configs/baseline_tiny_synthetic.py``).
        checkpoint (str, optional): weights saved by ``tools/train.py`` (or a work dir: the
            file its ``last_checkpoint`` names). When given, the ``pretrained``/``init_cfg`` of
            the sub-modules are ignored (the checkpoint holds all weights) and the file must fit
            the model exactly, with finite weights (:mod:`mmseg_ovseg.utils.load_guard`);
            when None, the model keeps its config initialisation (e.g. CLIP weights).
        classes (str | list[str], optional): the vocabulary: a list, a comma-separated string,
            a ``.txt`` file (one name per line) or a registered name (``get_vocabulary``).
            None keeps the model's vocabulary (the training classes).
        templates (str | list[str], optional): prompt templates for the text encoder.
        device (str): ``'cpu'`` or ``'cuda:0'`` etc.; a device this machine lacks is refused.
        cfg_options (dict, optional): config overrides.

    ``model`` is the segmentor. Calling the inferencer with a path, an ``(H, W, 3)`` uint8
    array in BGR order (as read by ``cv2``/``mmcv.imread``, like mmseg's ``inference_model``)
    or a list of them returns a list of :class:`SegDataSample` with ``pred_sem_seg`` (class
    indices into ``classes``) and ``seg_logits``.
    """

    def __init__(self,
                 config: Union[str, Config],
                 checkpoint: Optional[str] = None,
                 classes: Union[str, Sequence[str], None] = None,
                 templates: Union[str, Sequence[str], None] = None,
                 device: str = 'cpu',
                 cfg_options: Optional[dict] = None):
        import mmseg_ovseg  # noqa: F401  (registers models, safe checkpoint globals)
        if isinstance(config, str):
            if not osp.isfile(config):
                raise FileNotFoundError(f'config file not found: {config}')
            config = Config.fromfile(config)
        elif not isinstance(config, Config):
            raise TypeError(f'config must be a path or a Config, got {type(config).__name__}')
        cfg = copy.deepcopy(config)
        if cfg_options:
            cfg.merge_from_dict(cfg_options)
        from mmseg_ovseg.utils.dist import check_device
        from mmseg_ovseg.utils.load_guard import resolve_checkpoint_path
        check_device(device)
        if checkpoint is not None:
            checkpoint = resolve_checkpoint_path(checkpoint)
        self.cfg = cfg
        self.device = device
        self.model = self._build_model(cfg, checkpoint, device)
        if classes is not None:
            self.set_vocabulary(classes, templates)
        elif templates is not None:
            self.set_vocabulary(self.classes, templates)
        self.pipeline = Compose(self._test_pipeline(cfg))

    # ------------------------------------------------------------------ model
    @staticmethod
    def _build_model(cfg: Config, checkpoint: Optional[str], device: str):
        model_cfg = cfg.model
        model_cfg.train_cfg = None
        if checkpoint is not None:
            # The checkpoint holds every weight: do not read CLIP/ImageNet files again.
            if 'pretrained' in model_cfg:
                model_cfg.pretrained = None
            for value in model_cfg.values():
                if isinstance(value, dict):
                    for key in ('pretrained', 'init_cfg'):
                        if key in value:
                            value[key] = None
        init_default_scope(cfg.get('default_scope', 'mmseg'))
        model = MODELS.build(model_cfg)
        meta = {}
        if checkpoint is not None:
            from mmseg_ovseg.utils.load_guard import load_checkpoint_checked
            ckpt = load_checkpoint_checked(model, checkpoint, map_location='cpu')
            meta = ckpt.get('meta') or {}
        classes = getattr(model, 'vocabulary', None)
        if classes is None:
            classes = (meta.get('dataset_meta') or {}).get('classes')
        if classes is None:
            classes = [str(i) for i in range(model.decode_head.num_classes)]
        model.dataset_meta = dict(classes=list(classes), palette=make_palette(len(classes)))
        model.cfg = cfg
        return model.to(device).eval()

    @property
    def classes(self) -> List[str]:
        return list(self.model.dataset_meta['classes'])

    def set_vocabulary(self, classes, templates=None) -> None:
        """Switch the vocabulary (list, comma-separated string, ``.txt`` path or name)."""
        from mmseg_ovseg.clip.vocabularies import get_vocabulary
        names = get_vocabulary(classes)
        if not hasattr(self.model, 'set_vocabulary'):
            raise TypeError(f'{type(self.model).__name__} has a fixed set of classes (no '
                            'set_vocabulary); use a TextEncoderDecoder config for open '
                            'vocabularies')
        self.model.set_vocabulary(names, templates)
        self.model.dataset_meta = dict(classes=names, palette=make_palette(len(names)))

    @staticmethod
    def _test_pipeline(cfg: Config) -> list:
        pipeline = cfg.get('test_pipeline')
        if pipeline is None:
            try:
                pipeline = cfg.test_dataloader.dataset.pipeline
            except AttributeError:
                raise KeyError('config has neither `test_pipeline` nor '
                               '`test_dataloader.dataset.pipeline`') from None
        pipeline = [copy.deepcopy(t) for t in pipeline if t.get('type') != 'LoadAnnotations']
        # Images are decoded here (clear errors, arrays and files alike), so the first step
        # takes an array.
        if pipeline and 'LoadImage' in pipeline[0].get('type', ''):
            pipeline[0] = dict(type='LoadImageFromNDArray')
        else:
            pipeline.insert(0, dict(type='LoadImageFromNDArray'))
        return pipeline

    # -------------------------------------------------------------- inference
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

    def __call__(self, images: Union[ImageType, Sequence[ImageType]]) -> List[SegDataSample]:
        if isinstance(images, (str, np.ndarray)):
            images = [images]
        results = []
        for image in images:
            data = self.pipeline(dict(img=self.read_image(image)))
            batch = dict(inputs=[data['inputs']], data_samples=[data['data_samples']])
            with torch.no_grad():
                sample = self.model.test_step(batch)[0]
            if isinstance(image, str):
                sample.set_metainfo(dict(img_path=image))
            results.append(sample)
        return results

    # ---------------------------------------------------------- visualisation
    def visualize(self,
                  image: ImageType,
                  data_sample: SegDataSample,
                  out_file: Optional[str] = None,
                  opacity: float = 0.5,
                  legend: bool = True) -> np.ndarray:
        """Overlay the prediction on the image, names on the regions, plus a legend panel.

        The picture of mmseg's :class:`SegLocalVisualizer` (``with_labels=True``), drawn by
        :func:`~mmseg_ovseg.apis.draw.draw_sem_seg`; the legend on the right lists the
        predicted classes with their colours. Returns the RGB picture and
        writes it to ``out_file`` if given.
        """
        rgb = mmcv.bgr2rgb(self.read_image(image))
        meta = self.model.dataset_meta
        # mmseg's SegLocalVisualizer picture at bounded memory (draw.py: its label placement
        # took ~100 s and +2.9 GB on a 4000x3000 image); numpy labels, so a 1x1 image works
        label_map = data_sample.pred_sem_seg.data.cpu().numpy()
        drawn = draw_sem_seg(rgb, label_map[0], meta['classes'], meta['palette'],
                             alpha=opacity)
        if legend:
            labels = np.unique(label_map)
            drawn = draw_legend(drawn, [int(i) for i in labels if i < len(meta['classes'])],
                                meta['classes'], meta['palette'])
        if out_file is not None:
            mmcv.imwrite(mmcv.rgb2bgr(drawn), out_file)
        return drawn


def draw_legend(image: np.ndarray, labels: Sequence[int], classes: Sequence[str],
                palette: Sequence[Sequence[int]]) -> np.ndarray:
    """Append a white panel to the right of an RGB image: one colour swatch + name per label."""
    h = image.shape[0]
    font, scale, thick = cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1
    row = 16
    names = [_ascii(classes[i]) for i in labels]
    text_w = max([cv2.getTextSize(n, font, scale, thick)[0][0] for n in names] + [40])
    panel = np.full((max(h, row * len(labels) + 8), text_w + 30, 3), 255, np.uint8)
    for k, (label, name) in enumerate(zip(labels, names)):
        y = 4 + k * row
        color = tuple(int(c) for c in palette[label])
        cv2.rectangle(panel, (4, y), (16, y + 12), color, -1)
        cv2.rectangle(panel, (4, y), (16, y + 12), (0, 0, 0), 1)
        cv2.putText(panel, name, (22, y + 10), font, scale, (0, 0, 0), thick, cv2.LINE_AA)
    if panel.shape[0] > h:  # more classes than rows fit: pad the picture below
        image = np.concatenate(
            [image, np.full((panel.shape[0] - h, ) + image.shape[1:], 255, np.uint8)])
    return np.concatenate([image, panel], axis=1)


def _ascii(text: str) -> str:
    # cv2's Hershey fonts only draw ASCII.
    return re.sub(r'[^\x20-\x7e]', '?', str(text))
