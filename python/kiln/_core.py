"""The kiln package's core: compile, load, run, errors, engine caches."""

import abc
import ctypes
import json
import os
import threading
import warnings

import numpy as np

from . import _lib
from ._lib import Handle, lib

# ---- Errors -----------------------------------------------------------------


class Error(RuntimeError):
    """A kiln failure; the message is kiln's (naming the file, input or setting)."""

    status = "internal"


class InvalidArgumentError(Error, ValueError):
    """A malformed argument: a setting, an input spec, an input's dtype or shape."""

    status = "invalid_argument"


class InvalidModelError(Error, ValueError):
    """The model or artifact is truncated, corrupt or fails the ONNX checker."""

    status = "invalid_model"


class UnsupportedError(Error):
    """Valid ONNX that kiln does not implement (an op, dtype or attribute)."""

    status = "unsupported"


class FileError(Error, OSError):
    """A file could not be read or written."""

    status = "io"


class InternalError(Error):
    """A bug in kiln."""

    status = "internal"


_ERRORS = {1: InvalidArgumentError, 2: InvalidModelError, 3: UnsupportedError, 4: FileError, 5: InternalError}


def _check(status):
    if status != 0:
        message = (lib.kiln_last_error() or b"").decode("utf-8", "replace")
        if status == 6:
            raise MemoryError("kiln: " + message)
        raise _ERRORS.get(status, Error)(message)


# ---- Dtypes -----------------------------------------------------------------

_NUMPY_TO_KILN = {
    np.dtype(np.float32): 1,
    np.dtype(np.uint8): 2,
    np.dtype(np.int8): 3,
    np.dtype(np.uint16): 4,
    np.dtype(np.int16): 5,
    np.dtype(np.int32): 6,
    np.dtype(np.int64): 7,
    np.dtype(np.bool_): 9,
    np.dtype(np.float16): 10,
    np.dtype(np.float64): 11,
    np.dtype(np.uint32): 12,
    np.dtype(np.uint64): 13,
}
_KILN_TO_NUMPY = {code: dtype for dtype, code in _NUMPY_TO_KILN.items()}
_KILN_TO_NUMPY[16] = np.dtype(np.uint16)  # bfloat16: raw bits (numpy has no bfloat16)
BFLOAT16 = 16


def _dtype_name(dtype):
    """A dtype name ("float32") from a numpy dtype, a torch dtype or a string."""
    if dtype is None:
        return "float32"
    text = str(dtype)
    if text.startswith("torch."):
        text = text[len("torch.") :]
        return {"float": "float32", "half": "float16", "double": "float64", "bool": "bool", "long": "int64",
                "int": "int32"}.get(text, text)
    if text in ("bfloat16", "bf16"):
        return "bfloat16"
    try:
        return np.dtype(dtype).name
    except TypeError:
        raise InvalidArgumentError("unknown dtype %r" % (dtype,)) from None


def _kiln_dtype(dtype):
    name = _dtype_name(dtype)
    if name == "bfloat16":
        return BFLOAT16
    code = _NUMPY_TO_KILN.get(np.dtype(name))
    if code is None:
        raise InvalidArgumentError("dtype %s is not one kiln can hold" % name)
    return code


# ---- Inputs -----------------------------------------------------------------


class Input:
    """One model input: its dtype and the range of shapes the engine must run.

    As Torch-TensorRT's ``Input``: either ``shape=`` (static) or
    ``min_shape=``, ``opt_shape=``, ``max_shape=`` (tactics are timed at
    ``opt_shape``). ``name`` defaults to the model's input at this position.
    """

    def __init__(self, min_shape=None, opt_shape=None, max_shape=None, dtype="float32", name=None, shape=None):
        if shape is not None:
            if min_shape is not None or max_shape is not None:
                raise TypeError("Input: give shape= or min_shape/opt_shape/max_shape, not both")
            min_shape = opt_shape = max_shape = shape
        if min_shape is None:
            raise TypeError("Input: min_shape (or shape) is required")
        self.min_shape = tuple(int(d) for d in min_shape)
        self.opt_shape = tuple(int(d) for d in (opt_shape if opt_shape is not None else min_shape))
        self.max_shape = tuple(int(d) for d in (max_shape if max_shape is not None else min_shape))
        if not len(self.min_shape) == len(self.opt_shape) == len(self.max_shape):
            raise InvalidArgumentError("Input %s: min, opt and max shapes have different ranks" % (name or ""))
        self.dtype = _dtype_name(dtype)
        self.name = name

    @classmethod
    def from_tensor(cls, array, name=None):
        """A static input with the shape and dtype of a numpy array or torch tensor."""
        return cls(shape=tuple(array.shape), dtype=array.dtype, name=name)

    def is_static(self):
        return self.min_shape == self.max_shape

    def __repr__(self):
        return "Input(min_shape=%s, opt_shape=%s, max_shape=%s, dtype=%s, name=%r)" % (
            self.min_shape, self.opt_shape, self.max_shape, self.dtype, self.name)


def _specs(inputs):
    """ctypes input specs (and the objects they point into, to keep alive)."""
    if not inputs:
        return None, 0, []
    keep = []
    specs = (_lib.InputSpec * len(inputs))()
    for i, item in enumerate(inputs):
        spec = item if isinstance(item, Input) else Input.from_tensor(item)
        dims = [(ctypes.c_int64 * len(s))(*s) for s in (spec.min_shape, spec.opt_shape, spec.max_shape)]
        name = spec.name.encode() if spec.name else None
        keep += dims + [name]
        specs[i] = _lib.InputSpec(name, _kiln_dtype(spec.dtype), len(spec.min_shape), *dims)
    return specs, len(inputs), keep


# ---- Engine caches ----------------------------------------------------------


class BaseEngineCache(abc.ABC):
    """A user engine cache, as the tutorial's ``BaseEngineCache``.

    kiln calls ``save(hash, blob)`` with each engine it builds and ``load(hash)``
    before building one. ``hash`` is a weight-agnostic 64-character hex
    string; ``blob`` is bytes. ``load`` returns the bytes saved under ``hash``
    or None. Calls may come from kiln's threads, several at once. An
    exception in either is a cache miss with a warning, never a failed
    compile; kiln verifies every blob it loads.
    """

    @abc.abstractmethod
    def save(self, hash, blob):
        """Stores ``blob`` (bytes) under ``hash`` (str)."""

    @abc.abstractmethod
    def load(self, hash):
        """Returns the bytes saved under ``hash``, or None."""


class RAMEngineCache(BaseEngineCache):
    """The tutorial's example: engines kept in a dict, for this process."""

    def __init__(self):
        self.engine_cache = {}

    def save(self, hash, blob):
        self.engine_cache[hash] = blob

    def load(self, hash):
        return self.engine_cache.get(hash)


class _CacheBridge:
    """A BaseEngineCache as kiln_cache_callbacks. The CFUNCTYPE objects take
    the GIL on kiln's threads; this object keeps them alive as long as the
    settings that hold them."""

    def __init__(self, cache):
        self.cache = cache
        self.save_fn = _lib.SAVE_FN(self._save)
        self.load_fn = _lib.LOAD_FN(self._load)
        self.callbacks = _lib.CacheCallbacks(ctypes.sizeof(_lib.CacheCallbacks), None, self.save_fn, self.load_fn)

    def _save(self, user, key, blob, size):
        try:
            self.cache.save(key.decode(), ctypes.string_at(blob, size) if size else b"")
            return 0
        except BaseException as e:  # noqa: B902 - a callback must never raise into C
            warnings.warn("kiln: %s.save(%s) raised %r; the engine is not cached"
                          % (type(self.cache).__name__, key.decode(), e), RuntimeWarning)
            return -1

    def _load(self, user, key, result):
        try:
            blob = self.cache.load(key.decode())
            if blob is None:
                return 0
            if not isinstance(blob, bytes):
                blob = bytes(blob)
            memory = lib.kiln_cache_result_alloc(result, len(blob))
            if not memory:
                return -1
            ctypes.memmove(memory, blob, len(blob))
            return 1
        except BaseException as e:  # noqa: B902
            warnings.warn("kiln: %s.load(%s) raised %r; treated as a miss"
                          % (type(self.cache).__name__, key.decode(), e), RuntimeWarning)
            return -1


# ---- Settings ---------------------------------------------------------------

_PRECISIONS = {"float32": "fp32", "fp32": "fp32", "float": "fp32", "bfloat16": "bf16", "bf16": "bf16",
               "float16": "fp16", "fp16": "fp16", "half": "fp16"}
# Names the C API does not know: handled here.
_PYTHON_SETTINGS = ("custom_engine_cache", "make_refittable")
_setting_names = None


def setting_names():
    """Every keyword compile() and load() accept."""
    global _setting_names
    if _setting_names is None:
        with _Settings({}) as s:
            names = json.loads(s.to_json())
        _setting_names = sorted(set(names) | set(_PYTHON_SETTINGS))
    return list(_setting_names)


def _setting_value(name, value):
    if name == "enabled_precisions":
        values = [value] if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__") else list(value)
        result = []
        for v in values:
            text = str(v)
            text = text[len("torch."):] if text.startswith("torch.") else text
            result.append(_PRECISIONS.get(text, text))
        return result
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple, set)):
        return [str(v) for v in value]
    if isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    raise TypeError("setting %r: unsupported value %r" % (name, value))


class _Settings:
    """A kiln_settings handle built from keyword settings."""

    def __init__(self, settings, caller="compile"):
        self.handle = Handle()
        self.bridge = None
        values = {}
        for name, value in settings.items():
            if _setting_names is not None and name not in _setting_names:
                raise TypeError("%s() got an unexpected keyword argument %r" % (caller, name))
            if value is None:
                continue
            if name == "custom_engine_cache":
                if not isinstance(value, BaseEngineCache):
                    raise TypeError("custom_engine_cache must be a kiln.BaseEngineCache, got %r" % (value,))
                self.bridge = _CacheBridge(value)
                continue
            if name == "make_refittable":
                name = "refittable"
            values[name] = _setting_value(name, value)
        _check(lib.kiln_settings_create(ctypes.byref(self.handle)))
        try:
            if values:
                _check(lib.kiln_settings_set_json(self.handle, json.dumps(values).encode()))
            if self.bridge is not None:
                _check(lib.kiln_settings_set_cache(self.handle, ctypes.byref(self.bridge.callbacks)))
        except InvalidArgumentError as e:
            self.close()
            if "unknown setting" in str(e):
                raise TypeError("%s() got an unexpected keyword argument: %s" % (caller, e)) from None
            raise

    def to_json(self):
        out = ctypes.c_void_p()
        _check(lib.kiln_settings_to_json(self.handle, ctypes.byref(out)))
        return _lib.take_string(out)

    def close(self):
        if self.handle:
            lib.kiln_settings_destroy(self.handle)
            self.handle = Handle()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()


def _validate_names(settings, caller):
    names = setting_names()
    for name in settings:
        if name not in names:
            raise TypeError("%s() got an unexpected keyword argument %r (kiln settings: %s)"
                            % (caller, name, ", ".join(names)))


# ---- Tensors ----------------------------------------------------------------


class _OwnedTensor:
    """Destroys a kiln_tensor when the last array viewing it is gone."""

    __slots__ = ("handle", "__weakref__")

    def __init__(self, handle):
        self.handle = handle

    def __del__(self):
        if self.handle:
            lib.kiln_tensor_destroy(self.handle)
            self.handle = None


def _array_of(handle):
    """A numpy array over a kiln-owned output tensor, without a copy."""
    owner = _OwnedTensor(handle)
    rank = lib.kiln_tensor_rank(handle)
    shape_ptr = lib.kiln_tensor_shape(handle)
    shape = tuple(shape_ptr[i] for i in range(rank))
    code = lib.kiln_tensor_dtype(handle)
    dtype = _KILN_TO_NUMPY[code]
    size = lib.kiln_tensor_byte_size(handle)
    if size == 0:
        return np.empty(shape, dtype=dtype), code
    raw = (ctypes.c_uint8 * size).from_address(lib.kiln_tensor_data(handle))
    raw._kiln_owner = owner  # the array's base holds the tensor alive
    array = np.frombuffer(raw, dtype=dtype).reshape(shape)
    if not lib.kiln_tensor_mutable_data(handle):
        array.flags.writeable = False
    return array, code


# ---- Compiled models --------------------------------------------------------


class CompiledModel:
    """A compiled model: call it on numpy arrays or torch tensors.

    Inputs are read in place when they are C-contiguous and of the input's
    dtype (others are made contiguous first; dtypes are never converted:
    a wrong dtype is an InvalidArgumentError). Outputs are numpy arrays
    over kiln's memory (torch tensors when the inputs were), freed when the
    last array viewing them dies. One model runs one call at a time; calls
    from several threads take turns.
    """

    def __init__(self, handle, torch_module=None):
        self._handle = handle
        self._lock = threading.Lock()
        self._torch_module = torch_module
        self.input_names = [lib.kiln_model_input_name(handle, i).decode()
                            for i in range(lib.kiln_model_num_inputs(handle))]
        self.output_names = [lib.kiln_model_output_name(handle, i).decode()
                             for i in range(lib.kiln_model_num_outputs(handle))]

    def _live(self):
        if not self._handle:
            raise InvalidArgumentError("this kiln CompiledModel is closed")
        return self._handle

    def run(self, inputs):
        """Runs on a list of numpy arrays; returns the list of outputs as numpy arrays."""
        handle = self._live()
        arrays = []
        for i, x in enumerate(inputs):
            a = np.ascontiguousarray(x)
            if a.dtype not in _NUMPY_TO_KILN:
                raise InvalidArgumentError("input %d: dtype %s is not one kiln can hold" % (i, a.dtype))
            arrays.append(a)
        wrapped = (Handle * max(1, len(arrays)))()
        try:
            for i, a in enumerate(arrays):
                shape = (ctypes.c_int64 * max(1, a.ndim))(*a.shape)
                _check(lib.kiln_tensor_wrap(_NUMPY_TO_KILN[a.dtype], shape, a.ndim,
                                            a.ctypes.data if a.nbytes else None, a.nbytes, ctypes.byref(wrapped[i])))
            n_out = len(self.output_names)
            outputs = (Handle * max(1, n_out))()
            with self._lock:
                _check(lib.kiln_model_run(self._live(), wrapped, len(arrays), outputs, n_out))
            return [_array_of(Handle(outputs[i].value))[0] for i in range(n_out)]
        finally:
            for i in range(len(arrays)):
                if wrapped[i]:
                    lib.kiln_tensor_destroy(wrapped[i])
            del handle

    def __call__(self, *inputs):
        """``model(x, ...)``: one output is returned as is, several as a tuple.
        Torch tensors in give torch tensors out (kiln.torch)."""
        if any(type(x).__module__.startswith("torch") for x in inputs):
            from . import torch as kiln_torch

            outputs = kiln_torch.run_torch(self, inputs)
        else:
            outputs = self.run(inputs)
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def device_io_unavailable(self):
        """None when the model runs on device memory (CUDA tensors in and
        out, on the caller's stream, no copies: backend "cuda" with the
        whole model in one engine); otherwise why not, as a string."""
        reason = getattr(self, "_device_io", False)
        if reason is False:
            status = lib.kiln_model_check_device_io(self._live())
            reason = None if status == 0 else (lib.kiln_last_error() or b"").decode("utf-8", "replace")
            self._device_io = reason
        return reason

    def _output_descs(self, key, wrapped, count):
        """[(kiln dtype code, shape)] of the outputs for the inputs wrapped in
        ``wrapped``, cached under ``key`` (the inputs' dtypes and shapes)."""
        cache = self.__dict__.setdefault("_output_desc_cache", {})
        descs = cache.get(key)
        if descs is None:
            descs = []
            dims = (ctypes.c_int64 * 16)()
            rank, dtype = ctypes.c_size_t(), ctypes.c_int()
            for o in range(len(self.output_names)):
                _check(lib.kiln_model_output_info(self._live(), wrapped, count, o, ctypes.byref(dtype), dims, 16,
                                                  ctypes.byref(rank)))
                descs.append((dtype.value, tuple(dims[d] for d in range(rank.value))))
            if len(cache) > 64:  # a bound for a model fed ever new shapes
                cache.clear()
            cache[key] = descs
        return descs

    def run_device(self, inputs, allocate, stream=0):
        """Runs on device memory without a copy or a host synchronisation:
        ``inputs`` are (kiln dtype code, shape, device address, CUDA device
        index) tuples; ``allocate(dtype code, shape)`` returns the output's
        (device address, keep-alive object); the run is enqueued on
        ``stream`` (a cudaStream_t as an int; 0 is the legacy default
        stream) and ordered with the work on it before and after (kiln.h,
        "Run on device memory"). Returns the keep-alive objects of the
        outputs. kiln.torch calls it with CUDA tensors."""
        n_in, n_out = len(inputs), len(self.output_names)
        wrapped = (Handle * max(1, n_in))()
        outs = (Handle * max(1, n_out))()
        try:
            for i, (code, shape, address, device) in enumerate(inputs):
                dims = (ctypes.c_int64 * max(1, len(shape)))(*shape)
                _check(lib.kiln_tensor_wrap_device(code, dims, len(shape), address or None, device,
                                                   ctypes.byref(wrapped[i])))
            with self._lock:
                key = tuple((code, tuple(shape)) for code, shape, _, _ in inputs)
                results = []
                for o, (code, shape) in enumerate(self._output_descs(key, wrapped, n_in)):
                    address, keep = allocate(code, shape)
                    results.append(keep)
                    dims = (ctypes.c_int64 * max(1, len(shape)))(*shape)
                    _check(lib.kiln_tensor_wrap_device(code, dims, len(shape), address or None,
                                                       inputs[0][3] if inputs else 0, ctypes.byref(outs[o])))
                _check(lib.kiln_model_run_into_stream(self._live(), wrapped, n_in, outs, n_out,
                                                      ctypes.c_void_p(stream or None)))
            return results
        finally:
            for i in range(n_in):
                if wrapped[i]:
                    lib.kiln_tensor_destroy(wrapped[i])
            for o in range(n_out):
                if outs[o]:
                    lib.kiln_tensor_destroy(outs[o])

    def report(self):
        """What the compile did: {"backend", "compile_ms", "engines": [...],
        "segments": [...], "last_refit": None or the stats of the last refit()}."""
        out = ctypes.c_void_p()
        _check(lib.kiln_model_report_json(self._live(), ctypes.byref(out)))
        return json.loads(_lib.take_string(out))

    def engines(self):
        """One dict per engine: key, status ("hit", "miss", "built_uncached"),
        reason (why a miss missed), build_ms, load_ms, refit_ms."""
        return self.report()["engines"]

    def segments(self):
        """One dict per segment of the partitioned model, in execution order:
        kind ("engine" or "fallback"), nodes, engine (an index into engines())
        or reason (why it is not an engine), and values_in, bytes_in,
        values_unsized: what it reads from earlier segments at every run
        (through host memory: on the cuda backend a copy off the device and
        one back on), bytes at the opt shapes."""
        return self.report()["segments"]

    @property
    def compile_ms(self):
        return self.report()["compile_ms"]

    @property
    def inputs(self):
        """The input specs: [{"name", "dtype", "min", "opt", "max"}, ...]."""
        out = ctypes.c_void_p()
        _check(lib.kiln_model_inputs_json(self._live(), ctypes.byref(out)))
        return json.loads(_lib.take_string(out))

    def weights(self):
        """The refittable weights, what refit() takes: [{"name", "dtype",
        "shape"}, ...], float initializers the model reads as data. Other
        initializers are structural constants (part of the engine key)."""
        out = ctypes.c_void_p()
        _check(lib.kiln_model_weights_json(self._live(), ctypes.byref(out)))
        return json.loads(_lib.take_string(out))

    def refit(self, weights):
        """Gives the model new weight values in place, without a compile:
        ``weights`` maps initializer names to numpy arrays or torch tensors
        (CPU or not) of the weight's dtype and shape (never converted).
        Every engine replays its weight recipes (BatchNorm folding, layouts)
        for every input shape it has run; unnamed weights keep their values.
        The values are copied. All or nothing: an unknown name, a structural
        constant or a wrong dtype or shape raises InvalidArgumentError naming
        it, and the model is unchanged; so does a model compiled with
        ``immutable_weights=True``. Afterwards save() refuses (the artifact
        would embed the compile-time weights). Waits for a run on another
        thread to finish. Returns the refit's stats: {"weights", "engines",
        "fallback_weights", "check_ms", "refit_ms"}."""
        items = list(weights.items()) if hasattr(weights, "items") else list(weights)
        arrays = [(str(name), _weight_array(name, value)) for name, value in items]
        n = len(arrays)
        names = (ctypes.c_char_p * max(1, n))(*[name.encode() for name, _ in arrays])
        wrapped = (Handle * max(1, n))()
        try:
            for i, (_, a) in enumerate(arrays):
                shape = (ctypes.c_int64 * max(1, a.ndim))(*a.shape)
                _check(lib.kiln_tensor_wrap(_NUMPY_TO_KILN[a.dtype], shape, a.ndim,
                                            a.ctypes.data if a.nbytes else None, a.nbytes, ctypes.byref(wrapped[i])))
            with self._lock:
                _check(lib.kiln_model_refit(self._live(), names, wrapped, n))
        finally:
            for i in range(n):
                if wrapped[i]:
                    lib.kiln_tensor_destroy(wrapped[i])
        return self.report()["last_refit"]

    def save(self, path):
        """Writes one AOT artifact (.kiln) that kiln.load() serves without a build."""
        _check(lib.kiln_model_save(self._live(), os.fsencode(path)))

    def close(self):
        """Releases the engines now; later calls raise InvalidArgumentError."""
        with self._lock:
            if self._handle:
                lib.kiln_model_destroy(self._handle)
                self._handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        if getattr(self, "_handle", None):
            lib.kiln_model_destroy(self._handle)
            self._handle = None


def _weight_array(name, value):
    """A C-contiguous numpy array of ``value`` (numpy or torch, any device)."""
    if type(value).__module__.startswith("torch"):
        value = value.detach()
        if value.device.type != "cpu":
            value = value.cpu()
        if str(value.dtype) == "torch.bfloat16":
            raise InvalidArgumentError("weight '%s': bfloat16 tensors are not accepted by the Python package yet" % name)
        value = value.contiguous().numpy()
    a = np.ascontiguousarray(value)
    if a.dtype not in _NUMPY_TO_KILN:
        raise InvalidArgumentError("weight '%s': dtype %s is not one kiln can hold" % (name, a.dtype))
    return a


def _compile_onnx(model, inputs, settings):
    specs, count, keep = _specs(inputs)
    with _Settings(settings) as s:
        handle = Handle()
        if isinstance(model, (bytes, bytearray, memoryview)):
            data = bytes(model) if not isinstance(model, bytes) else model
            _check(lib.kiln_compile_bytes(data, len(data), specs, count, s.handle, ctypes.byref(handle)))
        else:
            _check(lib.kiln_compile_file(os.fsencode(model), specs, count, s.handle, ctypes.byref(handle)))
    del keep
    return CompiledModel(handle)


def compile(model, inputs=None, **settings):
    """Compiles ``model`` through the engine cache.

    ``model``: an ONNX file path, ONNX bytes, or a ``torch.nn.Module``
    (exported through kiln.torch). ``inputs``: one ``kiln.Input`` (or an
    example array, for a static input) per model input, in order; None
    takes the model's declared static shapes. ``settings``: the tutorial's
    names (``cache_built_engines``, ``reuse_cached_engines``,
    ``immutable_weights``/``refittable``, ``engine_cache_dir``,
    ``engine_cache_size``, ``custom_engine_cache``, ``timing_cache_path``,
    ``enabled_precisions``, ``min_block_size``, ``optimization_level``, ...;
    kiln.setting_names() lists them). An unknown name is a TypeError.
    """
    _validate_names(settings, "compile")
    if type(model).__module__.startswith("torch") or hasattr(model, "state_dict"):
        from . import torch as kiln_torch

        return kiln_torch.compile(model, inputs=inputs, **settings)
    if inputs is not None and not isinstance(inputs, (list, tuple)):
        inputs = [inputs]
    return _compile_onnx(model, inputs, settings)


def load(path, **settings):
    """Loads an artifact written by CompiledModel.save (or ``kiln build``)."""
    _validate_names(settings, "load")
    with _Settings(settings, caller="load") as s:
        handle = Handle()
        _check(lib.kiln_load(os.fsencode(path), s.handle, ctypes.byref(handle)))
    return CompiledModel(handle)


def zoo_model(name, seed=0, batch=None):
    """The ONNX bytes of a built-in model (``kiln zoo`` lists them), with
    random weights from ``seed``; ``batch`` None gives a dynamic batch dim."""
    data, size = ctypes.c_void_p(), ctypes.c_size_t()
    _check(lib.kiln_zoo_model(name.encode(), seed, batch or 0, ctypes.byref(data), ctypes.byref(size)))
    try:
        return ctypes.string_at(data.value, size.value)
    finally:
        lib.kiln_free(data)
