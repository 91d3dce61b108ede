"""Shared fixtures. The tests import the package from this checkout
(python/kiln) unless KILN_TEST_INSTALLED is set; libkiln comes from
$KILN_LIBRARY (ctest sets it) or the build folder."""

import os
import pathlib
import sys

import numpy as np
import pytest

if not os.environ.get("KILN_TEST_INSTALLED"):
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))


@pytest.fixture
def fast(tmp_path):
    """Settings for fast tests: a private cache folder, no tactic timing, no
    timing cache."""
    return dict(engine_cache_dir=str(tmp_path / "cache"), optimization_level=0, timing_cache_path="-")


def ramp(shape):
    """Deterministic float32 values spread over [-1, 1)."""
    n = int(np.prod(shape))
    return (((np.arange(n, dtype=np.int64) * 7919) % 1000) / 500.0 - 1.0).astype(np.float32).reshape(shape)


def assert_close(actual, expected, rtol=1e-4):
    """max |actual - expected| <= rtol * max |expected|."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    scale = float(np.abs(expected).max())
    assert scale > 0
    diff = float(np.abs(actual - expected).max())
    assert diff <= rtol * scale, "max diff %g > %g * max |ref| %g" % (diff, rtol, scale)
