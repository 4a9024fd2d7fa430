"""Comparing a state dict with a module, and loading it so that no key is dropped silently.

:func:`compare_state_dict` is the one comparison of this package: every loading path (the
strict mmseg ViT backbones below, the CLIP towers :func:`mmseg_ovseg.clip.load_tower_weights`,
the checkpoint converters' ``--config`` check, the trained-checkpoint guard
:mod:`mmseg_ovseg.utils.load_guard`) lists missing, unexpected and mis-shaped keys through it
and words them with :meth:`StateDictMismatch.describe`; each caller only adds what it was
loading into what.

``nn.Module.load_state_dict(strict=False)`` and mmengine's ``load_state_dict`` (used by mmseg's
backbones for ``init_cfg=dict(type='Pretrained')``) skip missing and unexpected keys and only
print them (mmseg passes ``logger=None``, so not even into the log file); a checkpoint of a
slightly different architecture then trains or tests with random tensors.
:func:`load_state_dict_checked` compares the keys first and either raises
:class:`StateDictMismatchError` listing them (default) or warns naming them (explicit opt-out).

Keys a caller knows it does not need (e.g. the final norm ``ln1.*`` of a ViT checkpoint loaded
into a ViT without final norm) are named with ``ignore_unexpected`` / ``ignore_missing``
(key prefixes); anything else that does not fit is reported.
"""
import logging
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Tuple, Union

import torch
from torch import nn

__all__ = ['StateDictMismatch', 'StateDictMismatchError', 'compare_state_dict',
           'load_state_dict_checked', 'ON_MISMATCH']

ON_MISMATCH = ('error', 'warn')
# How many keys per kind a message lists before '... and N more'.
_LIST_LIMIT = 20


class StateDictMismatchError(ValueError):
    """A state dict does not fit a module: missing, unexpected or mis-shaped keys."""


@dataclass
class StateDictMismatch:
    """Keys of a state dict that do not fit a module (falsy when everything fits).

    Attributes:
        missing: module keys the state dict lacks.
        unexpected: state-dict keys the module does not have.
        mismatched: ``(key, state-dict shape, module shape)`` of keys present in both.
    """
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    mismatched: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.mismatched)

    def describe(self, limit: Optional[int] = _LIST_LIMIT, one_line: bool = False) -> str:
        """The error text listing the keys that do not fit ('' when everything fits).

        Multi-line (default): a count line, e.g. ``'1 missing, 2 unexpected, 1 with the wrong
        shape'``, then one indented line per kind: ``'missing keys (1): a'``, ``'unexpected
        keys (2): b, c'``, ``'wrong shape (1): d: checkpoint (5, 4) vs model (3, 4)'``.
        ``one_line``: only the kinds, joined by ``'; '`` (for one-line command-line errors).

        Args:
            limit: keys listed per kind before ``'... and N more'`` (None: all). A cut list
                also counts its keys per top-level module (``'backbone.*: 100'``) when that
                summarises them.
            one_line: one line instead of the count line and one line per kind.
        """
        shapes = [f'{k}: checkpoint {tuple(s)} vs model {tuple(m)}'
                  for k, s, m in self.mismatched]
        kinds = [('missing keys', self.missing), ('unexpected keys', self.unexpected),
                 ('wrong shape', shapes)]
        lines = [_list_keys(name, items, limit, grouped=name != 'wrong shape')
                 for name, items in kinds if items]
        if one_line:
            return '; '.join(lines)
        counts = [f'{len(items)} {what}' for (_, items), what in
                  zip(kinds, ('missing', 'unexpected', 'with the wrong shape')) if items]
        return '\n  '.join([', '.join(counts)] + lines)


def _list_keys(name: str, keys: List[str], limit: Optional[int], grouped: bool) -> str:
    """``'missing keys (152; backbone.*: 100, decode_head.*: 52): a, b ... and 150 more'``."""
    count = str(len(keys))
    if limit is None or len(keys) <= limit:
        return f'{name} ({count}): {", ".join(keys)}'
    groups = Counter(k.split('.', 1)[0] for k in keys)
    if grouped and len(groups) <= len(keys) // 2:  # only where the groups summarise the keys
        count += '; ' + ', '.join(f'{g}.*: {c}' for g, c in groups.most_common(4))
        count += ', ...' if len(groups) > 4 else ''
    return (f'{name} ({count}): {", ".join(keys[:limit])} ... and {len(keys) - limit} more')


def _prefixes(keys: Union[str, Iterable[str]]) -> Tuple[str, ...]:
    return (keys, ) if isinstance(keys, str) else tuple(keys)


def compare_state_dict(target: Union[nn.Module, Mapping[str, torch.Tensor]],
                       state: Mapping[str, torch.Tensor],
                       ignore_missing: Union[str, Iterable[str]] = (),
                       ignore_unexpected: Union[str, Iterable[str]] = (),
                       allow_missing_bn_counter: bool = True) -> StateDictMismatch:
    """Compare ``state`` with the state dict of ``target`` (a module or its state dict).

    Args:
        target: the module to load into, or its ``state_dict()`` (any tensors with shapes,
            e.g. on the ``meta`` device).
        state: the state dict to load.
        ignore_missing: prefixes of module keys that ``state`` may lack.
        ignore_unexpected: prefixes of ``state`` keys the module may lack.
        allow_missing_bn_counter: BatchNorm ``num_batches_tracked`` buffers may be missing (as
            mmengine allows); False for an exact comparison with ``target``.

    Returns:
        :class:`StateDictMismatch` (falsy when everything fits), keys in ``target``/``state``
        order.
    """
    own = target.state_dict() if isinstance(target, nn.Module) else target
    skip_missing, skip_unexpected = _prefixes(ignore_missing), _prefixes(ignore_unexpected)
    missing = [k for k in own if k not in state and not k.startswith(skip_missing)
               and not (allow_missing_bn_counter and k.endswith('num_batches_tracked'))]
    unexpected = [k for k in state if k not in own and not k.startswith(skip_unexpected)]
    mismatched = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in state.items()
                  if k in own and tuple(v.shape) != tuple(own[k].shape)]
    return StateDictMismatch(missing, unexpected, mismatched)


def load_state_dict_checked(module: nn.Module,
                            state: Mapping[str, torch.Tensor],
                            source: str,
                            on_mismatch: str = 'error',
                            ignore_missing: Union[str, Iterable[str]] = (),
                            ignore_unexpected: Union[str, Iterable[str]] = ()
                            ) -> StateDictMismatch:
    """Load ``state`` into ``module``, reporting every key that does not fit.

    Args:
        module: the module to load into.
        state: the state dict (keys relative to ``module``).
        source: what ``state`` is, for the messages (e.g. the checkpoint path).
        on_mismatch: ``'error'``: raise :class:`StateDictMismatchError` listing the keys and
            leave ``module`` untouched; ``'warn'``: log a warning and ``warnings.warn`` naming
            the keys, then load every key that fits (mis-shaped ones are skipped).
        ignore_missing / ignore_unexpected: key prefixes that are known not to fit
            (:func:`compare_state_dict`); they are neither reported nor loaded.

    Returns:
        The :class:`StateDictMismatch` (empty when everything fits).
    """
    if on_mismatch not in ON_MISMATCH:
        raise ValueError(f'on_mismatch must be one of {ON_MISMATCH}, got {on_mismatch!r}')
    mismatch = compare_state_dict(module, state, ignore_missing, ignore_unexpected)
    if mismatch:
        msg = f'{source} does not fit {type(module).__name__}: {mismatch.describe()}'
        if on_mismatch == 'error':
            raise StateDictMismatchError(
                msg + '\nFix the checkpoint or the config; keys known not to fit can be named '
                'with ignore_missing / ignore_unexpected, or on_mismatch=\'warn\' loads the '
                'rest.')
        from mmengine.logging import print_log
        print_log(msg, logger='current', level=logging.WARNING)
        warnings.warn(msg, stacklevel=2)
    skip = {k for k, _, _ in mismatch.mismatched}
    own = module.state_dict()
    load: Dict[str, torch.Tensor] = {k: v for k, v in state.items() if k in own and k not in skip}
    module.load_state_dict(load, strict=False)
    return mismatch
