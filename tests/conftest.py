"""Shared test set-up: fill mmseg's registries and make 'mmseg' the default scope, as a config
with ``default_scope='mmseg'`` and ``custom_imports=['mmseg_ovseg']`` does."""
import itertools
import logging
import os

import pytest
import torch
from mmengine.logging import MMLogger
from mmseg.utils import register_all_modules

import mmseg_ovseg  # noqa: F401

register_all_modules(init_default_scope=True)
_counter = itertools.count()
# Two cores are shared by tests that may run in parallel with other work.
torch.set_num_threads(int(os.environ.get('OVSEG_TEST_THREADS', '2')))


@pytest.fixture(autouse=True)
def _seed_and_scope():
    """Each test starts seeded and in the mmseg scope (a Runner built by an earlier test may
    have made another scope current)."""
    from mmengine.registry import DefaultScope
    torch.manual_seed(0)
    DefaultScope.get_instance(f'mmseg-test-{next(_counter)}', scope_name='mmseg')


# Log messages for the tests that check a warning (test_engine_hooks*.py).
class LogCapture(list):
    """Messages of the current MMLogger from ``attach()`` on (each Runner makes its own)."""

    def attach(self):
        handler = logging.Handler()
        handler.emit = lambda r: self.append(r.getMessage())
        MMLogger.get_current_instance().addHandler(handler)
        return self


@pytest.fixture
def warnings_log():
    return LogCapture().attach()
