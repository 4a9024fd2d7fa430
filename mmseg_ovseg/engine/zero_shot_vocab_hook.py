"""Inductive zero-shot training for any text-aware segmentor: seen names in training only.

ZegCLIP carries the zero-shot protocol in its segmentor (``zero_shot_split``); SAN, the
one-stage baseline and the other :class:`TextEncoderDecoder` models do not, since their papers
train on all classes of a dataset and test on others. To train them on the seen classes of a
split and test them on all classes (the protocol of ZegCLIP Sec. 4.1), this hook switches the
model's vocabulary:

- ``before_train``: the seen class names, in split order -- the labels
  :class:`~mmseg_ovseg.datasets.zero_shot.ZeroShotLabelMapping` (``mode='inductive'``) writes
  are ``0..S-1`` in that order, and the unseen names never reach the model;
- ``before_val_epoch`` / ``before_test_epoch``: the full vocabulary of the config, which
  the metric's labels index; ``after_val_epoch``: back to the seen names while training.

The vocabulary is not part of the checkpoint: a checkpoint of such a run loads into the
config's model with its full vocabulary (``tools/test.py``, the inferencer).
"""
from typing import List, Optional, Sequence, Union

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmseg.registry import HOOKS

from ..clip.vocabularies import get_zero_shot_split


@HOOKS.register_module()
class ZeroShotVocabularyHook(Hook):
    """Seen-class vocabulary while training, the full one while evaluating.

    Args:
        split (str | list[int] | dict): the zero-shot split, any spec of
            :func:`~mmseg_ovseg.clip.vocabularies.get_zero_shot_split`, in the label space of
            the model's (full) vocabulary.
    """
    priority = 'HIGH'

    def __init__(self, split: Union[str, Sequence[int], dict]):
        self.split = split
        self.full: Optional[List[str]] = None
        self.seen: Optional[List[str]] = None
        self._training = False

    def _model(self, runner):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if not hasattr(model, 'set_vocabulary') or not hasattr(model, 'vocabulary'):
            raise TypeError(f'ZeroShotVocabularyHook needs a text-aware segmentor '
                            f'(TextEncoderDecoder), got {type(model).__name__}')
        if getattr(model, 'zero_shot_split', None) is not None:
            raise ValueError(f'{type(model).__name__} has its own zero_shot_split; do not '
                             'combine it with ZeroShotVocabularyHook')
        if self.full is None:
            self.full = list(model.vocabulary)
            seen, _ = get_zero_shot_split(self.split, len(self.full))
            self.seen = [self.full[i] for i in seen]
        return model

    def _use(self, runner, names: List[str]) -> None:
        model = self._model(runner)
        if list(model.vocabulary) != names:
            model.set_vocabulary(list(names))

    def before_train(self, runner) -> None:
        model = self._model(runner)
        self._use(runner, self.seen)
        self._training = True
        runner.logger.info(f'ZeroShotVocabularyHook: training on {len(self.seen)} seen of '
                           f'{len(self.full)} classes ({type(model).__name__})')

    def before_val_epoch(self, runner) -> None:
        self._model(runner)
        self._use(runner, self.full)

    def after_val_epoch(self, runner, metrics=None) -> None:
        if self._training:  # validation inside the training loop
            self._use(runner, self.seen)

    def after_train(self, runner) -> None:
        self._training = False

    def before_test_epoch(self, runner) -> None:
        self._model(runner)
        self._use(runner, self.full)
