"""Helpers shared by the tests of `hw.memory`."""

import gc
import warnings

import pytest
from amaranth.hdl import UnusedElaboratable

__all__ = ["assert_rejected"]


def assert_rejected(error, fragment, factory, **kwargs):
    """``factory(**kwargs)`` must raise `error` with `fragment` in its message. Silences the
    UnusedElaboratable warning the half-built component emits when it is collected."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        message = _message_of(error, factory, kwargs)
        gc.collect()
    assert fragment in message, f"{fragment!r} not in {message!r}"


def _message_of(error, factory, kwargs):
    with pytest.raises(error) as info:
        factory(**kwargs)
    return str(info.value)
