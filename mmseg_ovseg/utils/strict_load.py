"""Loading a state dict into a module so that no key is dropped silently.

``nn.Module.load_state_dict(strict=False)`` and mmengine's ``load_state_dict`` (used by mmseg's
backbones for ``init_cfg=dict(type='Pretrained')``) skip missing and unexpected keys and only
print them (mmseg passes ``logger=None``, so not even into the log file); a checkpoint of a
slightly different architecture then trains or tests with random tensors. Every loading path of
this package compares the keys first with :func:`compare_state_dict` and either raises
:class:`StateDictMismatchError` listing them (default) or warns naming them (explicit opt-out).

Keys a caller knows it does not need (e.g. the final norm ``ln1.*`` of a ViT checkpoint loaded
into a ViT without final norm) are named with ``ignore_unexpected`` / ``ignore_missing``
(key prefixes); anything else that does not fit is reported.
"""
import logging
import warnings
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Tuple, Union

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
    """Keys of a state dict that do not fit a module.

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

    def describe(self, limit: int = _LIST_LIMIT) -> str:
        """One line per kind, each listing (up to ``limit``) keys."""

        def _fmt(name, items):
            more = f' ... and {len(items) - limit} more' if len(items) > limit else ''
            return f'\n  {name} ({len(items)}): {", ".join(items[:limit])}{more}'

        out = ''
        if self.missing:
            out += _fmt('missing in the checkpoint', self.missing)
        if self.unexpected:
            out += _fmt('unexpected (not in the model)', self.unexpected)
        if self.mismatched:
            out += _fmt('wrong shape', [f'{k} (checkpoint {list(s)} vs model {list(m)})'
                                        for k, s, m in self.mismatched])
        return out


def _prefixes(keys: Union[str, Iterable[str]]) -> Tuple[str, ...]:
    return (keys, ) if isinstance(keys, str) else tuple(keys)


def compare_state_dict(target: Union[nn.Module, Mapping[str, torch.Tensor]],
                       state: Mapping[str, torch.Tensor],
                       ignore_missing: Union[str, Iterable[str]] = (),
                       ignore_unexpected: Union[str, Iterable[str]] = ()) -> StateDictMismatch:
    """Compare ``state`` with the state dict of ``target`` (a module or its state dict).

    Args:
        target: the module to load into, or its ``state_dict()`` (any tensors with shapes,
            e.g. on the ``meta`` device).
        state: the state dict to load.
        ignore_missing: prefixes of module keys that ``state`` may lack. ``num_batches_tracked``
            buffers are always allowed to be missing (as mmengine does).
        ignore_unexpected: prefixes of ``state`` keys the module may lack.

    Returns:
        :class:`StateDictMismatch` (falsy when everything fits), keys in ``target``/``state``
        order.
    """
    own = target.state_dict() if isinstance(target, nn.Module) else target
    skip_missing, skip_unexpected = _prefixes(ignore_missing), _prefixes(ignore_unexpected)
    missing = [k for k in own if k not in state and not k.startswith(skip_missing)
               and not k.endswith('num_batches_tracked')]
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
        msg = (f'{source} does not fit {type(module).__name__}:{mismatch.describe()}')
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
