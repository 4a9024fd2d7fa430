"""Safe loading of mmengine checkpoints under ``torch.load(weights_only=True)``.

torch >= 2.6 loads with ``weights_only=True`` by default, and mmengine 0.10.7 calls
``torch.load`` without the argument. A checkpoint written by mmengine's ``Runner`` holds, besides
tensors, the message hub's ``HistoryBuffer`` objects (numpy arrays inside, plus its statistics
methods pickled as ``getattr(HistoryBuffer, 'min')``) and numpy scalars, so ``resume`` and
``load_from`` fail with ``UnpicklingError: Weights only load failed``.

Instead of switching safe loading off, :func:`register_safe_globals` allow-lists exactly the
globals found in such checkpoints (measured by saving one with the Runner and listing them with
``torch.serialization.get_unsafe_globals_in_checkpoint``):

- ``mmengine.logging.history_buffer.HistoryBuffer``;
- ``builtins.getattr``, replaced by :func:`_history_buffer_getattr`, which only resolves
  methods defined on ``HistoryBuffer`` (a general ``getattr`` would let a file reach any
  attribute of any allow-listed object);
- numpy array and scalar reconstruction (``numpy.ndarray``, ``numpy.dtype``, ``_reconstruct``,
  ``scalar``), under both the numpy 2 (``numpy._core``) and numpy 1 (``numpy.core``) module
  paths, and the numpy 2 dtype classes (``numpy.dtypes.Float64DType``, ...) of plain numeric,
  boolean and fixed-width string dtypes; object and structured dtypes stay refused.

Anything else in a file is still refused by torch's weights-only unpickler.
"""
import inspect
import pickle

import numpy as np
import torch

__all__ = ['register_safe_globals', 'safe_globals_for_mmengine']

# numpy 2 dtype classes (``numpy.dtypes``) that hold no Python objects.
_SAFE_DTYPE_CLASSES = (
    'BoolDType', 'Int8DType', 'Int16DType', 'Int32DType', 'Int64DType', 'UInt8DType',
    'UInt16DType', 'UInt32DType', 'UInt64DType', 'ByteDType', 'UByteDType', 'ShortDType',
    'UShortDType', 'IntDType', 'UIntDType', 'LongDType', 'ULongDType', 'LongLongDType',
    'ULongLongDType', 'Float16DType', 'Float32DType', 'Float64DType', 'LongDoubleDType',
    'Complex64DType', 'Complex128DType', 'CLongDoubleDType', 'StrDType', 'BytesDType')

_registered = False


def _history_buffer_getattr(obj, name, *default):
    """``getattr`` restricted to the methods of ``HistoryBuffer``.

    Python pickles ``HistoryBuffer.min`` (stored in the buffer's ``_statistics_methods``) as
    ``getattr(HistoryBuffer, 'min')``; this is the only use of ``getattr`` in mmengine
    checkpoints, so nothing else is resolved.
    """
    from mmengine.logging import HistoryBuffer
    if default:
        raise pickle.UnpicklingError('getattr with a default value is not allowed in a checkpoint')
    if not (obj is HistoryBuffer and isinstance(name, str) and not name.startswith('_')
            and inspect.isfunction(HistoryBuffer.__dict__.get(name))):
        raise pickle.UnpicklingError(
            f'checkpoint asks for getattr({obj!r}, {name!r}); only public methods of '
            'mmengine HistoryBuffer are allowed')
    return getattr(obj, name)


def safe_globals_for_mmengine():
    """Return the allow-list as accepted by ``torch.serialization.add_safe_globals``.

    Entries are objects (registered under their ``__module__.__qualname__``) or
    ``(object, 'dotted.name')`` pairs for names that differ from the object's own path.
    """
    from mmengine.logging import HistoryBuffer
    multiarray = np._core.multiarray if hasattr(np, '_core') else np.core.multiarray
    entries = [
        HistoryBuffer,
        (_history_buffer_getattr, 'builtins.getattr'),
        np.ndarray,
        np.dtype,
    ]
    for prefix in ('numpy._core.multiarray', 'numpy.core.multiarray'):
        entries.append((multiarray._reconstruct, f'{prefix}._reconstruct'))
        entries.append((multiarray.scalar, f'{prefix}.scalar'))
    dtypes = getattr(np, 'dtypes', None)  # numpy >= 1.25
    for name in _SAFE_DTYPE_CLASSES:
        cls = getattr(dtypes, name, None)
        if cls is not None:
            entries.append((cls, f'numpy.dtypes.{name}'))
    return entries


def register_safe_globals():
    """Allow-list the types mmengine writes into checkpoints (idempotent).

    Called when :mod:`mmseg_ovseg` is imported, so ``Runner`` ``resume``/``load_from`` and
    :func:`mmengine.runner.load_checkpoint` work under torch's default safe loading.
    """
    global _registered
    if _registered:
        return
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is None:  # torch < 2.4 loads everything with pickle anyway
        return
    add(safe_globals_for_mmengine())
    _registered = True


register_safe_globals()
