"""ZegCLIP segmentor: the zero-shot training and inference protocol around the decoder.

`ZegCLIP <https://arxiv.org/abs/2212.03588>`_, Sec. 3.1 (generalised zero-shot setting) and
Sec. 4.1 (inductive / transductive settings):

- Inductive: the model is trained with the text of the *seen* classes only (labels remapped
  to ``0..S-1`` by :class:`ZeroShotLabelMapping`); at test time it scores *all* classes, and
  the sigmoid scores of the seen classes are lowered by ``seen_calibration`` (0.1 in the
  official code) against the bias towards the classes it was trained on.
- Transductive (``self_training=True``): all class names are known in training; pixels that
  :class:`ZeroShotLabelMapping` marked (``PSEUDO_LABEL``) get a pseudo-label, the argmax of the
  model's own current prediction over the unseen classes (no threshold); started from an
  inductive checkpoint (``load_from``), no calibration at test.
- Fully supervised: no split; all classes in training and test.

Everything else (backbone, text embeddings and their cache, whole/slide inference) is
:class:`TextEncoderDecoder`'s; the seen-class selection is its ``_post_text`` hook.
"""
from typing import List, Sequence, Union

import torch
from mmseg.models.utils import resize
from mmseg.registry import MODELS
from mmseg.utils import SampleList, add_prefix
from torch import Tensor

from ...clip.vocabularies import get_zero_shot_split
from ...datasets.zero_shot import PSEUDO_LABEL
from .text_encoder_decoder import TextEncoderDecoder


@MODELS.register_module()
class ZegCLIP(TextEncoderDecoder):
    """Text-aware encoder-decoder with ZegCLIP's zero-shot protocol.

    Args:
        zero_shot_split (str | list[int] | dict, optional): seen/unseen split of
            ``vocabulary`` (a spec of ``get_zero_shot_split``: ``'voc20'``, unseen indices,
            ``dict(unseen=..., seen=...)``). None: fully supervised.
        self_training (bool): transductive pseudo-labelling of unseen pixels; the training
            text then covers all classes. Default: False.
        seen_calibration (float): subtracted from the test scores of seen classes (matched by
            name, so it follows :meth:`set_vocabulary`). Default: 0.1.
        score_act (str): test-time score of the decoder logits: ``'sigmoid'`` (the
            non-exclusive loss) or ``'softmax'`` (the cross-entropy ablation).
        **kwargs: :class:`TextEncoderDecoder` arguments; ``vocabulary`` is the full class
            list (seen and unseen).
    """

    def __init__(self,
                 *args,
                 zero_shot_split: Union[str, Sequence[int], dict, None] = None,
                 self_training: bool = False,
                 seen_calibration: float = 0.1,
                 score_act: str = 'sigmoid',
                 **kwargs):
        super().__init__(*args, **kwargs)
        if score_act not in ('sigmoid', 'softmax'):
            raise ValueError(f"score_act must be 'sigmoid' or 'softmax', got {score_act!r}")
        if self_training and zero_shot_split is None:
            raise ValueError('ZegCLIP: self_training needs a zero_shot_split')
        self.zero_shot_split = zero_shot_split
        self.self_training = self_training
        self.seen_calibration = seen_calibration
        self.score_act = score_act
        if zero_shot_split is None:
            self.seen_classes = list(self.vocabulary)
        else:
            seen, _ = get_zero_shot_split(zero_shot_split, len(self.vocabulary))
            self.seen_classes = [self.vocabulary[i] for i in seen]

    # ------------------------------------------------------------------ class sets
    def _seen_mask(self) -> Tensor:
        """``(C,)`` bool: which classes of the current vocabulary are seen classes."""
        seen = set(self.seen_classes)
        return torch.tensor([name in seen for name in self.vocabulary], dtype=torch.bool)

    @property
    def inductive(self) -> bool:
        return self.zero_shot_split is not None and not self.self_training

    def _post_text(self, embeds: Tensor) -> Tensor:
        """All classes' embeddings; only the seen ones while training inductively."""
        if self.training and self.inductive:
            mask = self._seen_mask()
            if int(mask.sum()) != len(self.seen_classes):
                raise ValueError('ZegCLIP: the vocabulary no longer contains all seen classes '
                                 f'{self.seen_classes}; restore it before training')
            embeds = embeds[mask.to(embeds.device)]
        return embeds

    # ------------------------------------------------------------------ inference
    def encode_decode(self, inputs: Tensor, batch_img_metas: List[dict]) -> Tensor:
        """Calibrated class scores ``(B, C, H, W)`` (sigmoid minus the seen-class offset)."""
        logits = super().encode_decode(inputs, batch_img_metas)
        if self.score_act == 'softmax':
            scores = logits.softmax(dim=1)
        else:
            scores = logits.sigmoid()
        if self.seen_calibration and self.zero_shot_split is not None:
            offset = self._seen_mask().to(scores) * self.seen_calibration
            scores = scores - offset.view(1, -1, 1, 1)
        return scores

    # ------------------------------------------------------------------ training
    def pseudo_label(self, seg_logits: Tensor, data_samples: SampleList) -> SampleList:
        """Copies of ``data_samples`` whose ``PSEUDO_LABEL`` pixels hold the model's argmax
        over the unseen classes (computed without gradient from ``seg_logits (B, C, h, w)``).
        """
        unseen = (~self._seen_mask()).nonzero().flatten().to(seg_logits.device)
        if unseen.numel() == 0:
            raise ValueError('ZegCLIP: self-training needs unseen classes in the vocabulary')
        out = []
        for i, sample in enumerate(data_samples):
            gt = sample.gt_sem_seg.data  # (1, H, W)
            marked = gt == PSEUDO_LABEL
            sample = sample.clone()
            if marked.any():
                with torch.no_grad():
                    logits = resize(seg_logits[i:i + 1, unseen].detach(), size=gt.shape[-2:],
                                    mode='bilinear',
                                    align_corners=self.decode_head.align_corners)
                    # sigmoid is monotonic: the argmax of the logits is that of the scores.
                    pseudo = unseen[logits[0].argmax(dim=0, keepdim=True)].to(gt.dtype)
                sample.gt_sem_seg.data = torch.where(marked, pseudo, gt)
            out.append(sample)
        return out

    def _decode_head_forward_train(self, inputs: dict, data_samples: SampleList) -> dict:
        if not self.self_training:
            return super()._decode_head_forward_train(inputs, data_samples)
        seg_logits = self.decode_head.forward(inputs)
        data_samples = self.pseudo_label(seg_logits, data_samples)
        return add_prefix(self.decode_head.loss_by_feat(seg_logits, data_samples), 'decode')
