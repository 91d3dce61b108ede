"""The kiln package over libkiln, on the built-in zoo models (no torch)."""

import gc
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest

import kiln
from conftest import assert_close, ramp

BATCH = kiln.Input(min_shape=(1, 3, 64, 64), opt_shape=(2, 3, 64, 64), max_shape=(4, 3, 64, 64))


@pytest.fixture(scope="module")
def tiny():
    return kiln.zoo_model("resnet_tiny", seed=1)


@pytest.fixture(scope="module")
def tiny_other_weights():
    return kiln.zoo_model("resnet_tiny", seed=2)


class CountingCache(kiln.BaseEngineCache):
    def __init__(self):
        self.blobs = {}
        self.saves = 0
        self.hits = 0
        self.threads = set()

    def save(self, hash, blob):
        assert isinstance(hash, str) and len(hash) == 64 and isinstance(blob, bytes)
        self.threads.add(threading.get_ident())
        self.saves += 1
        self.blobs[hash] = blob

    def load(self, hash):
        blob = self.blobs.get(hash)
        self.hits += blob is not None
        return blob


def test_round_trip_matches_the_reference_backend(tiny, fast):
    model = kiln.compile(tiny, inputs=[BATCH], **fast)
    reference = kiln.compile(tiny, inputs=[BATCH], backend="ref")
    for batch in (1, 3):
        x = ramp((batch, 3, 64, 64))
        assert_close(model(x), reference(x))
    assert [e["status"] for e in model.engines()] == ["miss"]
    assert reference.engines() == []
    # One engine segment reading only the caller's input: nothing passes between segments.
    [segment] = model.segments()
    assert segment["kind"] == "engine" and segment["engine"] == 0 and segment["nodes"] > 0
    assert (segment["values_in"], segment["bytes_in"], segment["values_unsized"]) == (0, 0, 0)
    assert reference.segments() == []  # the reference backend runs the model as it is, unpartitioned
    assert model.inputs[0]["min"] == [1, 3, 64, 64] and model.inputs[0]["dtype"] == "float32"
    assert len(model.input_names) == 1 and len(model.output_names) == 1


def test_compile_from_a_path_with_static_shapes(tmp_path, fast):
    path = tmp_path / "tiny.onnx"
    path.write_bytes(kiln.zoo_model("resnet_tiny", seed=1, batch=2))
    model = kiln.compile(path, **fast)  # the declared static shapes
    assert model.inputs[0]["max"] == [2, 3, 64, 64]
    assert model(ramp((2, 3, 64, 64))).shape == (2, 10)


def test_outputs_wrap_kiln_memory_and_outlive_the_model(tiny, fast):
    model = kiln.compile(tiny, inputs=[BATCH], **fast)
    x = ramp((2, 3, 64, 64))
    y = model(x)
    expected = y.copy()
    assert y.flags.writeable and y.flags.c_contiguous
    base = y
    while getattr(base, "base", None) is not None:
        base = base.base
    assert not isinstance(base, np.ndarray)  # a view of kiln's buffer, not a copy
    model.close()
    del model
    gc.collect()
    np.testing.assert_array_equal(y, expected)
    # Non-contiguous inputs are accepted (made contiguous first).
    again = kiln.compile(tiny, inputs=[BATCH], **fast)
    wide = np.repeat(x, 2, axis=3)[:, :, :, ::2]
    assert not wide.flags.c_contiguous
    np.testing.assert_array_equal(again(wide), expected)


def test_python_cache_sees_one_save_then_a_hit(tiny, fast):
    cache = CountingCache()
    first = kiln.compile(tiny, inputs=[BATCH], custom_engine_cache=cache, **fast)
    assert cache.saves == 1 and cache.hits == 0
    assert first.engines()[0]["status"] == "miss"
    second = kiln.compile(tiny, inputs=[BATCH], custom_engine_cache=cache, **fast)
    assert cache.saves == 1 and cache.hits == 1
    assert second.engines()[0]["status"] == "hit"
    x = ramp((2, 3, 64, 64))
    np.testing.assert_array_equal(first(x), second(x))


def test_a_hit_with_other_weights_gives_that_models_outputs(tiny, tiny_other_weights, fast):
    cache = kiln.RAMEngineCache()  # the tutorial's
    first = kiln.compile(tiny, inputs=[BATCH], custom_engine_cache=cache, **fast)
    assert len(cache.engine_cache) == 1
    other = kiln.compile(tiny_other_weights, inputs=[BATCH], custom_engine_cache=cache, **fast)
    assert other.engines()[0]["status"] == "hit"
    x = ramp((3, 3, 64, 64))
    expected = kiln.compile(tiny_other_weights, inputs=[BATCH], backend="ref")(x)
    assert_close(other(x), expected)
    assert np.abs(first(x) - expected).max() > 1e-2


def test_an_exception_in_the_cache_is_a_miss_with_a_warning(tiny, fast):
    class Broken(kiln.BaseEngineCache):
        def save(self, hash, blob):
            raise IOError("disk on fire")

        def load(self, hash):
            raise KeyError(hash)

    with pytest.warns(RuntimeWarning) as warned:
        model = kiln.compile(tiny, inputs=[BATCH], custom_engine_cache=Broken(), **fast)
    messages = " ".join(str(w.message) for w in warned)
    assert "disk on fire" in messages and "treated as a miss" in messages
    assert model.engines()[0]["status"] == "miss"
    assert model(ramp((1, 3, 64, 64))).shape == (1, 10)


def test_disk_cache_settings(tiny, tmp_path):
    cache_dir = tmp_path / "engines"
    settings = dict(engine_cache_dir=cache_dir, optimization_level=0, timing_cache_path="-")
    off = kiln.compile(tiny, inputs=[BATCH], cache_built_engines=False, reuse_cached_engines=False, **settings)
    assert off.engines()[0]["status"] == "built_uncached"
    kiln.compile(tiny, inputs=[BATCH], engine_cache_size=1 << 30, **settings)
    hit = kiln.compile(tiny, inputs=[BATCH], immutable_weights=False, enabled_precisions={"fp32"}, **settings)
    assert hit.engines()[0]["status"] == "hit"


def test_save_and_load_an_artifact(tiny, fast, tmp_path):
    model = kiln.compile(tiny, inputs=[BATCH], **fast)
    path = tmp_path / "tiny.kiln"
    model.save(path)
    loaded = kiln.load(path, **fast)
    x = ramp((4, 3, 64, 64))
    np.testing.assert_array_equal(loaded(x), model(x))
    with pytest.raises(kiln.InvalidModelError):
        kiln.load(__file__)  # not an artifact


def test_bad_input_raises_with_kilns_message(tiny, fast, tmp_path):
    model = kiln.compile(tiny, inputs=[BATCH], **fast)
    with pytest.raises(kiln.InvalidArgumentError, match="dtype float64, expected float32"):
        model(ramp((2, 3, 64, 64)).astype(np.float64))
    with pytest.raises(kiln.InvalidArgumentError, match=r"dim 0 is 5, outside the compiled range \[1, 4\]"):
        model(ramp((5, 3, 64, 64)))
    with pytest.raises(kiln.InvalidArgumentError, match="expected 1 inputs, got 2"):
        model(ramp((2, 3, 64, 64)), ramp((2, 3, 64, 64)))
    with pytest.raises(kiln.InvalidArgumentError, match="not one kiln can hold"):
        model(np.zeros((2, 3, 64, 64), dtype=np.complex64))
    model.close()
    with pytest.raises(kiln.InvalidArgumentError, match="closed"):
        model(ramp((2, 3, 64, 64)))
    with pytest.raises(kiln.Error, match="no_such_model.onnx"):
        kiln.compile(tmp_path / "no_such_model.onnx", **fast)
    with pytest.raises(kiln.InvalidModelError):
        kiln.compile(b"not an onnx model", **fast)
    with pytest.raises(kiln.InvalidArgumentError, match="named 'images'"):
        kiln.compile(tiny, inputs=[kiln.Input(shape=(1, 3, 64, 64), name="images")], **fast)


def test_settings_are_checked(tiny, fast):
    with pytest.raises(TypeError, match="engine_cache_dri"):
        kiln.compile(tiny, inputs=[BATCH], engine_cache_dri="/tmp/x")
    with pytest.raises(TypeError, match="use_python_runtime"):
        kiln.load("x.kiln", use_python_runtime=True)
    with pytest.raises(kiln.InvalidArgumentError, match="optimization_level"):
        kiln.compile(tiny, inputs=[BATCH], optimization_level=9)
    with pytest.raises(kiln.InvalidArgumentError, match="enabled_precisions"):
        kiln.compile(tiny, inputs=[BATCH], enabled_precisions={"int4"})
    with pytest.raises(TypeError, match="custom_engine_cache"):
        kiln.compile(tiny, inputs=[BATCH], custom_engine_cache={})
    assert "engine_cache_dir" in kiln.setting_names()


def test_fp16_reaches_the_settings(tiny, fast):
    # The cuda backend builds a half engine from it; the cpu backend ignores it.
    # The settings as the C API holds them are only visible through _Settings.
    from kiln._core import _Settings
    for value in ({"fp16"}, {"fp32", "float16"}, ["half"]):
        with _Settings({"enabled_precisions": value}) as s:
            assert "fp16" in json.loads(s.to_json())["enabled_precisions"], value
    engine = kiln.compile(tiny, inputs=[BATCH], enabled_precisions={"fp32", "fp16"}, **fast)
    assert engine(ramp((2, 3, 64, 64))).shape[0] == 2


def test_cpu_fused_attention_is_a_setting_in_the_engine_key(fast, monkeypatch):
    """The opt-in fused attention by name: another engine (key), the same
    results; the environment variable the CLI reads does not reach the library."""
    bert = kiln.zoo_model("bert_tiny", seed=1, batch=2)
    specs = [kiln.Input(shape=(2, 16), dtype="int64", name="input_ids"),
             kiln.Input(shape=(2, 16), dtype="int64", name="attention_mask")]
    ids = (np.arange(32, dtype=np.int64).reshape(2, 16) * 7) % 1000
    mask = np.ones((2, 16), dtype=np.int64)
    mask[1, -3:] = 0
    monkeypatch.setenv("KILN_CPU_FUSED_ATTENTION", "1")
    off = kiln.compile(bert, inputs=specs, **fast)
    on = kiln.compile(bert, inputs=specs, cpu_fused_attention=True, **fast)
    assert "cpu_fused_attention" in kiln.setting_names()
    assert off.engines()[0]["key"] != on.engines()[0]["key"]
    assert [e["status"] for e in on.engines()] == ["miss"]
    assert_close(on(ids, mask), off(ids, mask))


def test_library_not_found_says_where_it_looked(tmp_path):
    package = tmp_path / "site" / "kiln"
    shutil.copytree(os.path.join(os.path.dirname(kiln.__file__)), package,
                    ignore=shutil.ignore_patterns("libkiln.so*", "__pycache__"))
    env = dict(os.environ, KILN_LIBRARY=str(tmp_path / "nowhere.so"), KILN_BUILD_DIR=str(tmp_path / "nobuild"),
               KILN_TEST_INSTALLED="1")
    env.pop("LD_LIBRARY_PATH", None)  # where a packed kiln puts libkiln on the loader path
    result = subprocess.run([sys.executable, "-c", "import kiln"], cwd=tmp_path / "site", env=env,
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "cannot load libkiln" in result.stderr
    assert "nowhere.so" in result.stderr and "nobuild" in result.stderr and "loader path" in result.stderr


def test_version():
    assert kiln.abi_version == 1
    # One version: project(VERSION) in CMakeLists.txt. libkiln reports it, and
    # the package's metadata (pyproject.toml) must say the same.
    root = pathlib.Path(__file__).resolve().parents[2]
    cmake = re.search(r"project\(kiln VERSION ([0-9.]+)", (root / "CMakeLists.txt").read_text()).group(1)
    pyproject = re.search(r'^version = "([0-9.]+)"', (root / "python" / "pyproject.toml").read_text(), re.M).group(1)
    assert kiln.__version__ == cmake == pyproject
