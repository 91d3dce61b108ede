"""Finds and loads libkiln (the C API of include/kiln/kiln.h) with ctypes."""

import ctypes
import ctypes.util
import os
import pathlib

ABI_VERSION = 1  # KILN_ABI_VERSION of the header these prototypes follow
ABI_MINOR_VERSION = 3  # the KILN_ABI_MINOR_VERSION that added the newest function or report key used here

_c_char_pp = ctypes.POINTER(ctypes.c_char_p)


class Handle(ctypes.c_void_p):
    """An opaque kiln handle (kiln_settings*, kiln_model*, kiln_tensor*)."""


class InputSpec(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("dtype", ctypes.c_int),
        ("rank", ctypes.c_size_t),
        ("min_shape", ctypes.POINTER(ctypes.c_int64)),
        ("opt_shape", ctypes.POINTER(ctypes.c_int64)),
        ("max_shape", ctypes.POINTER(ctypes.c_int64)),
    ]


# int (*save)(void* user, const char* key, const void* blob, size_t size)
SAVE_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t)
# int (*load)(void* user, const char* key, kiln_cache_result* result)
LOAD_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p)
DESTROY_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
RELEASE_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


class CacheCallbacks(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("user", ctypes.c_void_p),
        ("save", SAVE_FN),
        ("load", LOAD_FN),
        ("destroy", DESTROY_FN),
    ]


def _candidates():
    """Where the library is looked for, in order, as (description, path)."""
    env = os.environ.get("KILN_LIBRARY")
    if env:
        yield "KILN_LIBRARY", env
    here = pathlib.Path(__file__).resolve().parent
    for name in ("libkiln.so.%d" % ABI_VERSION, "libkiln.so"):
        yield "next to the package", str(here / name)
    # A source checkout: python/kiln/ next to the build folder of the README.
    build = os.environ.get("KILN_BUILD_DIR", str(here.parent.parent / "build"))
    yield "the build folder", str(pathlib.Path(build) / "src" / ("libkiln.so.%d" % ABI_VERSION))
    found = ctypes.util.find_library("kiln")
    yield "the system's loader path", found or "libkiln.so.%d" % ABI_VERSION


def _load():
    tried = []
    for where, path in _candidates():
        if where != "the system's loader path" and not os.path.exists(path):
            tried.append("%s: %s (no such file)" % (where, path))
            continue
        try:
            return ctypes.CDLL(path)
        except OSError as e:
            tried.append("%s: %s (%s)" % (where, path, e))
    raise ImportError(
        "kiln: cannot load libkiln. Build it (cmake --build build --target kiln_capi) or set "
        "KILN_LIBRARY to its path. Looked in:\n  " + "\n  ".join(tried)
    )


def _declare(lib):
    P = ctypes.POINTER
    vp, sz, i64 = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int64
    H, HP = Handle, P(Handle)
    protos = {
        "kiln_abi_version": (ctypes.c_uint32, []),
        "kiln_abi_minor_version": (ctypes.c_uint32, []),
        "kiln_version": (ctypes.c_char_p, []),
        "kiln_last_error": (ctypes.c_char_p, []),
        "kiln_free": (None, [vp]),
        "kiln_settings_create": (ctypes.c_int, [HP]),
        "kiln_settings_destroy": (None, [H]),
        "kiln_settings_set_json": (ctypes.c_int, [H, ctypes.c_char_p]),
        "kiln_settings_to_json": (ctypes.c_int, [H, P(vp)]),
        "kiln_settings_set_cache": (ctypes.c_int, [H, P(CacheCallbacks)]),
        "kiln_cache_result_alloc": (vp, [vp, sz]),
        "kiln_compile_file": (ctypes.c_int, [ctypes.c_char_p, P(InputSpec), sz, H, HP]),
        "kiln_compile_bytes": (ctypes.c_int, [ctypes.c_char_p, sz, P(InputSpec), sz, H, HP]),
        "kiln_load": (ctypes.c_int, [ctypes.c_char_p, H, HP]),
        "kiln_model_save": (ctypes.c_int, [H, ctypes.c_char_p]),
        "kiln_model_destroy": (None, [H]),
        "kiln_model_num_inputs": (sz, [H]),
        "kiln_model_num_outputs": (sz, [H]),
        "kiln_model_input_name": (ctypes.c_char_p, [H, sz]),
        "kiln_model_output_name": (ctypes.c_char_p, [H, sz]),
        "kiln_model_report_json": (ctypes.c_int, [H, P(vp)]),
        "kiln_model_inputs_json": (ctypes.c_int, [H, P(vp)]),
        "kiln_model_run": (ctypes.c_int, [H, P(H), sz, P(H), sz]),
        "kiln_model_weights_json": (ctypes.c_int, [H, P(vp)]),
        "kiln_model_refit": (ctypes.c_int, [H, P(ctypes.c_char_p), P(H), sz]),
        "kiln_tensor_wrap": (ctypes.c_int, [ctypes.c_int, P(i64), sz, vp, sz, HP]),
        "kiln_tensor_wrap_device": (ctypes.c_int, [ctypes.c_int, P(i64), sz, vp, ctypes.c_int, HP]),
        "kiln_tensor_device": (ctypes.c_int, [H]),
        "kiln_model_check_device_io": (ctypes.c_int, [H]),
        "kiln_model_output_info": (ctypes.c_int, [H, P(H), sz, sz, P(ctypes.c_int), P(i64), sz, P(sz)]),
        "kiln_model_run_into_stream": (ctypes.c_int, [H, P(H), sz, P(H), sz, vp]),
        "kiln_tensor_destroy": (None, [H]),
        "kiln_tensor_dtype": (ctypes.c_int, [H]),
        "kiln_tensor_rank": (sz, [H]),
        "kiln_tensor_shape": (P(i64), [H]),
        "kiln_tensor_byte_size": (sz, [H]),
        "kiln_tensor_data": (vp, [H]),
        "kiln_tensor_mutable_data": (vp, [H]),
        "kiln_zoo_model": (ctypes.c_int, [ctypes.c_char_p, ctypes.c_uint64, i64, P(vp), P(sz)]),
    }
    if not hasattr(lib, "kiln_abi_minor_version"):
        raise ImportError("kiln: libkiln is older than ABI %d.%d (it has no kiln_abi_minor_version); rebuild it"
                          % (ABI_VERSION, ABI_MINOR_VERSION))
    for name, (restype, argtypes) in protos.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    return lib


lib = _declare(_load())
if lib.kiln_abi_version() != ABI_VERSION:
    raise ImportError(
        "kiln: libkiln has ABI version %d, this package needs %d" % (lib.kiln_abi_version(), ABI_VERSION)
    )
if lib.kiln_abi_minor_version() < ABI_MINOR_VERSION:
    raise ImportError("kiln: libkiln has ABI minor version %d, this package needs %d or newer"
                      % (lib.kiln_abi_minor_version(), ABI_MINOR_VERSION))


def take_string(pointer):
    """Decodes a kiln-allocated C string and frees it."""
    try:
        return ctypes.string_at(pointer.value).decode("utf-8")
    finally:
        lib.kiln_free(pointer)
