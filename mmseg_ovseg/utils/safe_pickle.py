"""Restricted pickle loading for annotation files (the REFER ``refs(unc).p`` pickles).

``pickle.load`` on an untrusted file can run arbitrary code: every global the stream names is
imported and may be called. Annotation pickles only need plain data (lists, dicts, tuples,
str, bytes, int, float, bool, None), none of which needs a global, plus ``set``/``frozenset``
which older protocols rebuild through ``builtins``. :func:`load_plain_pickle` refuses any other
global with :class:`UnsafePickleError`, before anything is imported.
"""
import io
import pickle
from typing import Any

# The only globals a plain-data pickle may name (``__builtin__`` in Python 2 pickles).
ALLOWED_GLOBALS = frozenset((module, name) for module in ('builtins', '__builtin__')
                            for name in (
                                'set', 'frozenset', 'list', 'dict', 'tuple', 'str',
                                'bytes', 'int', 'float', 'bool', 'complex'))


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names a global outside :data:`ALLOWED_GLOBALS`."""


class _PlainDataUnpickler(pickle.Unpickler):

    def __init__(self, file, source: str, **kwargs):
        super().__init__(file, **kwargs)
        self._source = source

    def find_class(self, module: str, name: str):
        if (module, name) in ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise UnsafePickleError(
            f'{self._source}: refusing to unpickle global {module}.{name}; only builtin '
            'containers, strings and numbers are allowed in annotation pickles')


def load_plain_pickle(path: str, encoding: str = 'utf-8') -> Any:
    """Load a pickle that may only contain builtin containers, strings and numbers.

    Args:
        path (str): pickle file.
        encoding (str): how Python 2 ``str`` objects are decoded (the REFER pickles were
            written by Python 2).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        UnsafePickleError: the pickle names any other global (a class, a function).
        pickle.UnpicklingError: the file is not a readable pickle (message names the file).
    """
    with open(path, 'rb') as f:
        data = f.read()
    try:
        return _PlainDataUnpickler(io.BytesIO(data), source=path, encoding=encoding).load()
    except UnsafePickleError:
        raise
    except Exception as e:  # truncated / corrupt streams raise many different types
        raise pickle.UnpicklingError(f'{path}: not a readable pickle ({type(e).__name__}: '
                                     f'{e})') from e
