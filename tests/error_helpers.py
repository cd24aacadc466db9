"""Helpers shared by the processor's error tests (test_processor_errors.py,
test_model_open_errors.py)."""
from __future__ import annotations

import numpy as np
import pytest

from recstrata import errors

RS_OK, INVALID, NOT_FOUND = 0, 1, 2


def good_feeds(batch=2):
    """Valid inputs of the multi-input test model (conftest.build_multi_model)."""
    return {
        "x_f32": np.ones((batch, 4), np.float32), "x_f64": np.ones((batch, 3)),
        "x_i32": np.ones((batch, 2), np.int32), "x_i64": np.arange(batch),
    }


def raises(exc_type, match, fn, *args, **kwargs):
    """fn(...) raises exc_type (a RecstrataError carrying that class's code) matching `match`."""
    with pytest.raises(exc_type, match=match) as info:
        fn(*args, **kwargs)
    assert isinstance(info.value, errors.RecstrataError)
    if exc_type is not errors.RecstrataError:
        assert info.value.code == exc_type.code
    return info.value
