"""The model of a config, ready for inference (what :class:`~.inferencer.OpenVocabInferencer`
builds)."""
import logging
from typing import Optional

from mmengine.logging import MMLogger
from mmseg.registry import MODELS

from .palette import class_palette

__all__ = ['build_inference_model']


def build_inference_model(cfg, weights: Optional[str] = None, device: str = 'cpu'):
    """Build ``cfg.model`` for inference; load ``weights`` through the checkpoint guard, or run
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


def _quiet_init_weights(model) -> None:
    """``model.init_weights()`` without mmengine's per-parameter INFO report (one log
    record per parameter saying it is unchanged)."""
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        model.init_weights()
    finally:
        logger.setLevel(level)
