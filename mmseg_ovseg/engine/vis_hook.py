"""mmseg's ``SegVisualizationHook`` labelling pictures with the model's classes.

mmengine's ``ValLoop``/``TestLoop`` give the visualizer the dataset's ``metainfo`` when they are
built. An open-vocabulary segmentor predicts indices into its own vocabulary, which a config
(cross-dataset or zero-shot evaluation, ``model.vocabulary=...``) or a hook
(``ZeroShotVocabularyHook``) may set to other classes than the dataset's; pictures drawn with
the dataset's names and palette then name the wrong classes. ``OVSegVisualizationHook`` gives
the visualizer the model's ``dataset_meta`` (classes and palette of its current vocabulary,
``TextEncoderDecoder.dataset_meta``) before each val/test epoch, after the loops have applied
the dataset's, and again before each picture it draws (a vocabulary changed by another hook or
by hand mid-epoch is followed). Models without a ``dataset_meta`` dict holding ``classes``
(mmseg's closed-set segmentors) keep the dataset's. Ground truth is drawn only while the
model's classes are the dataset's (its labels index the dataset's classes).
"""
import os.path as osp
import warnings
from typing import Optional, Sequence

import mmcv
from mmengine import fileio
from mmengine.model import is_model_wrapper
from mmseg.engine.hooks import SegVisualizationHook
from mmseg.registry import HOOKS


@HOOKS.register_module()
class OVSegVisualizationHook(SegVisualizationHook):
    """``SegVisualizationHook`` (same arguments) whose visualizer uses the model's classes and
    palette (module docstring).

    The ground truth indexes the dataset's classes, the prediction the model's: when the two
    class lists differ, only the prediction is drawn (mmseg's visualizer labels both with one
    list) and a warning says so once.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._warned_gt = False

    @staticmethod
    def _model_meta(runner) -> Optional[dict]:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        meta = getattr(model, 'dataset_meta', None)
        if isinstance(meta, dict) and meta.get('classes') is not None:
            return meta
        return None

    @staticmethod
    def _dataset_classes(runner, mode: str) -> Optional[list]:
        loop = runner.test_loop if mode == 'test' else runner.val_loop
        meta = getattr(getattr(loop, 'dataloader', None) and loop.dataloader.dataset,
                       'metainfo', None) or {}
        classes = meta.get('classes')
        return None if classes is None else list(classes)

    def _use_model_meta(self, runner) -> Optional[list]:
        """Give the visualizer the model's meta; returns its classes (None: not changed)."""
        meta = self._model_meta(runner)
        if meta is None:
            return None
        self._visualizer.dataset_meta = dict(meta)
        return list(meta['classes'])

    def before_val_epoch(self, runner) -> None:
        self._use_model_meta(runner)

    def before_test_epoch(self, runner) -> None:
        self._use_model_meta(runner)

    def _after_iter(self, runner, batch_idx: int, data_batch: dict, outputs: Sequence,
                    mode: str = 'val') -> None:
        """mmseg's drawing, with the model's meta and the ground truth only when its classes
        are the model's."""
        if self.draw is False or mode == 'train' \
                or not self.every_n_inner_iters(batch_idx, self.interval):
            return
        # runner.iter builds the train loop on first use (in test mode too), and building a
        # loop hands the visualizer that loop's dataset meta: read it before setting ours.
        step = runner.iter
        classes = self._use_model_meta(runner)
        draw_gt = classes is None or classes == self._dataset_classes(runner, mode)
        if not draw_gt and not self._warned_gt:
            warnings.warn(f'{type(self).__name__}: the model\'s classes ({len(classes)}, e.g. '
                          f'{classes[:3]}) are not the dataset\'s; drawing predictions only '
                          '(ground-truth labels index the dataset\'s classes)')
            self._warned_gt = True
        for output in outputs:
            img_bytes = fileio.get(output.img_path, backend_args=self.backend_args)
            img = mmcv.imfrombytes(img_bytes, channel_order='rgb')
            self._visualizer.add_datasample(
                f'{mode}_{osp.basename(output.img_path)}', img, data_sample=output,
                draw_gt=draw_gt, show=self.show, wait_time=self.wait_time, step=step)
