"""Entry-point wrapper of the command-line tools: one-line errors, tracebacks on request.

``tools/*.py`` end with ``sys.exit(run_cli(main, 'test.py'))``. An exception escaping ``main``
prints one line, ``<prog>: error: <message>``, on stderr and exits with status 1 (130 for
Ctrl-C); the traceback is printed only with ``--debug`` (or ``OVSEG_DEBUG=1``) and is appended
to the log file of the run (the file handler of mmengine's current ``MMLogger``) when there is
one. In a
worker started by torchrun it also starts :func:`~mmseg_ovseg.utils.dist.exit_with_parent`, so
the worker ends when the torchrun agent does, and SIGINT ends it at once (as SIGTERM does).
"""
import logging
import os
import signal
import sys
import traceback
from typing import Callable, List, Optional, Sequence

__all__ = ['run_cli', 'error_message', 'DEBUG_HELP']

DEBUG_HELP = 'on an error, print the full traceback (default: a one-line message)'

# Messages of these types name the problem themselves; others get their type name in front.
_PLAIN_TYPES = (FileNotFoundError, IsADirectoryError, NotADirectoryError, ValueError, KeyError,
                TypeError)
_MAX_CHARS = 600


def error_message(exc: BaseException) -> str:
    """``exc`` as one line: its message (newlines folded), prefixed by the type where the
    message alone may not say what failed, shortened to about 600 characters."""
    if isinstance(exc, KeyError) and len(exc.args) == 1:
        text = str(exc.args[0])  # str(KeyError) is the repr of its message
    else:
        text = str(exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    text = ' '.join(lines)
    if not text:
        text = type(exc).__name__
    elif not isinstance(exc, _PLAIN_TYPES):
        text = f'{type(exc).__name__}: {text}'
    if len(text) > _MAX_CHARS:
        text = text[:_MAX_CHARS - 3].rstrip() + '...'
    return text


def _log_files() -> List[str]:
    """Files written by mmengine's current logger (the run's log, e.g. the Runner's
    ``work_dir/<timestamp>/<timestamp>.log``); none when no logger was created."""
    try:
        from mmengine.logging import MMLogger
    except ImportError:
        return []
    if not MMLogger._instance_dict:  # get_current_instance would create one
        return []
    logger = MMLogger.get_current_instance()
    return [h.baseFilename for h in logger.handlers if isinstance(h, logging.FileHandler)]


def _append_traceback(files: Sequence[str], prog: str, tb: str) -> List[str]:
    written = []
    for name in files:
        try:
            with open(name, 'a') as f:
                f.write(f'{prog}: error, traceback:\n{tb}')
            written.append(name)
        except OSError:
            pass
    return written


def run_cli(main: Callable[[Optional[Sequence[str]]], object],
            prog: str,
            argv: Optional[Sequence[str]] = None) -> int:
    """Run ``main(argv)``; return 0, or print a one-line error and return 1.

    Args:
        main: the tool's ``main(argv)``; its parser must accept ``--debug``.
        prog: the tool's name for the message (``'test.py'``).
        argv: the arguments (default ``sys.argv[1:]``).

    ``SystemExit`` (argparse errors, an explicit ``sys.exit``) passes through unchanged;
    Ctrl-C returns 130 after printing ``<prog>: interrupted``.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = '--debug' in args or os.environ.get('OVSEG_DEBUG', '') not in ('', '0')
    from .dist import close_distributed, exit_with_parent, launched_by_torchrun
    if launched_by_torchrun():
        exit_with_parent()
        # The agent passes on the SIGINT it gets; a KeyboardInterrupt would wait for the
        # current C++ call to return (a gloo collective blocks while its peer is interrupted
        # too), so a worker ends at once, as on SIGTERM.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        main(args)
    except KeyboardInterrupt:
        print(f'{prog}: interrupted', file=sys.stderr, flush=True)
        return 130
    except Exception as e:  # noqa: BLE001  (every error becomes one line)
        tb = traceback.format_exc()
        if debug:
            sys.stderr.write(tb)
        logs = _append_traceback(_log_files(), prog, tb)
        if debug:
            hint = ''
        elif logs:
            hint = f' (traceback in {logs[-1]}; --debug prints it)'
        else:
            hint = ' (--debug for the traceback)'
        print(f'{prog}: error: {error_message(e)}{hint}', file=sys.stderr, flush=True)
        return 1
    close_distributed()
    return 0
