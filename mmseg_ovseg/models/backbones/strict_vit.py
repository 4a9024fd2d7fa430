"""mmseg's ``VisionTransformer`` whose ``init_cfg`` pretrained load reports every key that does
not fit.

mmseg 1.x's ``VisionTransformer.init_weights`` loads ``init_cfg=dict(type='Pretrained')`` with
``strict=False`` and prints mismatches with ``print`` only: a checkpoint whose patch embedding
has a bias loaded into a model built without one (mmseg 1.x's default ``patch_bias=False``,
mmseg 0.x always had it) silently drops it. This subclass does the same load (checkpoint
``state_dict``, position embedding resized to ``img_size`` with ``interpolate_mode``) through
:func:`mmseg_ovseg.utils.strict_load.load_state_dict_checked`: by default any missing,
unexpected or mis-shaped key is an error that lists them. Modules and keys are mmseg's.
"""
from typing import Dict

import torch
from mmengine.logging import print_log
from mmengine.runner.checkpoint import CheckpointLoader
from mmseg.models.backbones import VisionTransformer
from mmseg.registry import MODELS

from mmseg_ovseg.utils.strict_load import ON_MISMATCH, load_state_dict_checked

# init_cfg keys of the pretrained load (besides 'type' and 'checkpoint').
_PRETRAINED_OPTIONS = ('prefix', 'on_mismatch', 'ignore_missing', 'ignore_unexpected')


@MODELS.register_module()
class StrictVisionTransformer(VisionTransformer):
    """mmseg ``VisionTransformer`` with a checked ``init_cfg`` pretrained load.

    Args:
        **kwargs: :class:`mmseg.models.backbones.VisionTransformer` arguments. Its
            ``init_cfg=dict(type='Pretrained', checkpoint=...)`` accepts, besides the checkpoint
            path or URL:

            - ``prefix`` (str): load only the keys under this prefix, stripped (e.g.
              ``'backbone.'`` for a whole-segmentor checkpoint);
            - ``on_mismatch`` (``'error'`` | ``'warn'``, default ``'error'``): a missing,
              unexpected or mis-shaped key raises
              :class:`~mmseg_ovseg.utils.strict_load.StateDictMismatchError` listing them, or
              (``'warn'``) is named in a warning and the rest is loaded;
            - ``ignore_missing`` / ``ignore_unexpected`` (list of key prefixes): keys known not
              to fit, e.g. ``['ln1.']`` for the final norm of a checkpoint trained with
              ``final_norm=True`` loaded into a model without it.

    Forward and outputs: as mmseg's ``VisionTransformer``.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        cfg = self.init_cfg
        if isinstance(cfg, dict) and cfg.get('type') == 'Pretrained':
            unknown = set(cfg) - {'type', 'checkpoint', *_PRETRAINED_OPTIONS}
            if unknown:
                raise KeyError(f'{type(self).__name__}: unknown init_cfg keys {sorted(unknown)}; '
                               f'a Pretrained init_cfg takes checkpoint and {_PRETRAINED_OPTIONS}')
            if cfg.get('on_mismatch', 'error') not in ON_MISMATCH:
                raise ValueError(f'init_cfg on_mismatch must be one of {ON_MISMATCH}, got '
                                 f'{cfg["on_mismatch"]!r}')

    def pretrained_state(self, checkpoint: str, prefix: str = '') -> Dict[str, torch.Tensor]:
        """The backbone state of ``checkpoint`` (path or URL): its ``state_dict`` (keys under
        ``prefix``, stripped), position embedding resized to the ``img_size`` grid as mmseg
        does (``interpolate_mode``, square source grid plus one class position)."""
        ckpt = CheckpointLoader.load_checkpoint(checkpoint, map_location='cpu')
        state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else ckpt
        if prefix:
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            if not state:
                raise KeyError(f'{checkpoint}: no keys under prefix {prefix!r}')
        pos = state.get('pos_embed')
        if pos is not None and pos.shape != self.pos_embed.shape:
            if pos.dim() != 3 or pos.shape[-1] != self.pos_embed.shape[-1]:
                raise ValueError(f'{checkpoint}: pos_embed {list(pos.shape)} cannot be resized '
                                 f'to {list(self.pos_embed.shape)}')
            src = int((pos.shape[1] - 1)**0.5)
            if src * src + 1 != pos.shape[1]:
                raise ValueError(f'{checkpoint}: pos_embed {list(pos.shape)} is not a square '
                                 'grid plus one class position')
            h, w = self.img_size
            print_log(f'resize pos_embed {list(pos.shape)} -> {list(self.pos_embed.shape)} '
                      f'({self.interpolate_mode})', logger='current')
            state = dict(state)
            state['pos_embed'] = self.resize_pos_embed(
                pos, (h // self.patch_size, w // self.patch_size), (src, src),
                self.interpolate_mode)
        return state

    def init_weights(self):
        cfg = self.init_cfg
        if not (isinstance(cfg, dict) and cfg.get('type') == 'Pretrained'):
            super().init_weights()
            return
        state = self.pretrained_state(cfg['checkpoint'], cfg.get('prefix', ''))
        load_state_dict_checked(
            self, state, source=f'pretrained checkpoint {cfg["checkpoint"]}',
            on_mismatch=cfg.get('on_mismatch', 'error'),
            ignore_missing=cfg.get('ignore_missing', ()),
            ignore_unexpected=cfg.get('ignore_unexpected', ()))
