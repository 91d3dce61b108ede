/* kiln's C API: compile ONNX models through the engine cache from C, or
 * from any language with a C foreign-function interface (the `kiln` Python
 * package is ctypes over this header).
 *
 *   kiln_settings* s;  kiln_model* m;  kiln_tensor* in;  kiln_tensor* out;
 *   kiln_settings_create(&s);
 *   kiln_settings_set(s, "engine_cache_dir", "/tmp/cache");
 *   int64_t min[] = {1, 3, 64, 64}, opt[] = {4, 3, 64, 64}, max[] = {8, 3, 64, 64};
 *   kiln_input_spec spec = {"input", KILN_FLOAT32, 4, min, opt, max};
 *   if (kiln_compile_file("model.onnx", &spec, 1, s, &m) != KILN_OK)
 *     fprintf(stderr, "%s\n", kiln_last_error());
 *   kiln_tensor_wrap(KILN_FLOAT32, shape, 4, data, bytes, &in);
 *   kiln_model_run(m, &in, 1, &out, 1);
 *   ... kiln_tensor_data(out) ...
 *   kiln_tensor_destroy(out); kiln_tensor_destroy(in);
 *   kiln_model_destroy(m); kiln_settings_destroy(s);
 *
 * Conventions, for every function below:
 * - Functions that can fail return kiln_status. KILN_OK is 0; on any other
 *   value, kiln_last_error() returns the message (naming the file, input,
 *   dim or setting involved), and every `*_out` parameter is left unchanged.
 * - No C++ exception ever leaves a kiln_* function; a failure inside kiln
 *   that is not a kiln error (out of memory, a bug) is KILN_ERROR_INTERNAL
 *   or KILN_ERROR_OUT_OF_MEMORY with a message.
 * - Pointer parameters must not be NULL unless the comment says so; a NULL
 *   where one is required is KILN_ERROR_INVALID_ARGUMENT, never a crash.
 *   The *_destroy functions accept NULL and do nothing.
 * - Ownership: a handle returned through `*_out` belongs to the caller, who
 *   releases it with the matching *_destroy. Strings returned through
 *   `char** *_out` are allocated by kiln and released with kiln_free.
 *   `const char*` results are owned by the object they were read from and
 *   stay valid as long as it does.
 * - Threads: every function may be called from several threads at once on
 *   different handles. A settings object may be read (compile, load) from
 *   several threads at once but not written (kiln_settings_set*) while it is
 *   read. A model may run (or be refitted) on one thread at a time (runs on
 *   other models, or compiles, go on in parallel); its const accessors may be called from any
 *   thread while it is not being destroyed. Tensors follow the same
 *   read-many, write-one rule as any buffer.
 * - The header is C99; `KILN_ABI_VERSION` is the ABI this header describes
 *   and the number in libkiln's SONAME (libkiln.so.1). Compare it with
 *   kiln_abi_version() at run time to catch a mismatched library.
 */
#ifndef KILN_KILN_H_
#define KILN_KILN_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define KILN_API __attribute__((visibility("default")))
#else
#define KILN_API
#endif

/* Incremented on every incompatible change of this header's types or
 * functions (the SONAME changes with it); additions keep it. */
#define KILN_ABI_VERSION 1
/* Incremented on every addition (a function, a setting, a struct member at
 * a struct's end) that keeps KILN_ABI_VERSION; back to 0 when that
 * changes. A caller that needs an addition checks kiln_abi_minor_version()
 * >= the minor that added it. 1: kiln_model_refit, kiln_model_weights_json,
 * "last_refit" in kiln_model_report_json, kiln_abi_minor_version.
 * 2: device tensors and stream runs: kiln_tensor_wrap_device,
 * kiln_tensor_device, kiln_model_check_device_io, kiln_model_output_info,
 * kiln_model_run_into_stream.
 * 3: "segments" in kiln_model_report_json. */
#define KILN_ABI_MINOR_VERSION 3

typedef enum kiln_status {
  KILN_OK = 0,
  KILN_ERROR_INVALID_ARGUMENT = 1, /* a malformed argument: setting, spec, shape, dtype, input */
  KILN_ERROR_INVALID_MODEL = 2,    /* the model or artifact is truncated, corrupt or fails the checker */
  KILN_ERROR_UNSUPPORTED = 3,      /* valid ONNX that kiln does not implement */
  KILN_ERROR_IO = 4,               /* a file could not be read or written */
  KILN_ERROR_INTERNAL = 5,         /* a bug in kiln */
  KILN_ERROR_OUT_OF_MEMORY = 6
} kiln_status;

/* Element types; the values are ONNX's TensorProto.DataType codes. */
typedef enum kiln_dtype {
  KILN_FLOAT32 = 1,
  KILN_UINT8 = 2,
  KILN_INT8 = 3,
  KILN_UINT16 = 4,
  KILN_INT16 = 5,
  KILN_INT32 = 6,
  KILN_INT64 = 7,
  KILN_BOOL = 9, /* one byte per element, 0 or 1 */
  KILN_FLOAT16 = 10,
  KILN_FLOAT64 = 11,
  KILN_UINT32 = 12,
  KILN_UINT64 = 13,
  KILN_BFLOAT16 = 16
} kiln_dtype;

typedef struct kiln_settings kiln_settings; /* compile settings */
typedef struct kiln_model kiln_model;       /* a compiled model */
typedef struct kiln_tensor kiln_tensor;     /* a dense row-major n-d array */

/* ---- Library ---------------------------------------------------------- */

/* KILN_ABI_VERSION of the loaded library. Never fails. */
KILN_API uint32_t kiln_abi_version(void);
/* KILN_ABI_MINOR_VERSION of the loaded library (a library older than minor
 * 1 lacks this function). Never fails. */
KILN_API uint32_t kiln_abi_minor_version(void);
/* kiln's version (the build's project VERSION, e.g. "0.1.0"). Static
 * storage. */
KILN_API const char* kiln_version(void);
/* The message of the last failed call on this thread; "" when none failed.
 * Thread-local: valid until the next failing kiln call on this thread. */
KILN_API const char* kiln_last_error(void);
/* "ok", "invalid_argument", ...; static storage. */
KILN_API const char* kiln_status_name(kiln_status status);
/* Releases memory kiln returned through a `char**` or `void**` out
 * parameter. NULL does nothing. */
KILN_API void kiln_free(void* memory);
/* Bytes per element of `dtype`; 0 for a value that is not a kiln_dtype. */
KILN_API size_t kiln_dtype_size(kiln_dtype dtype);

/* ---- Settings --------------------------------------------------------- */
/* Settings are named as in the engine-caching tutorial kiln implements
 * (Torch-TensorRT's): cache_built_engines, reuse_cached_engines,
 * refittable, immutable_weights (the inverse of refittable),
 * engine_cache_dir, engine_cache_size (bytes), engine_cache_tiers,
 * engine_cache_secret_file, timing_cache_path, enabled_precisions
 * ("fp32", "bf16", "fp16"), min_block_size, optimization_level (0-5), debug,
 * num_threads, and backend ("cpu": oneDNN engines through the engine
 * cache, the default; "cuda": cuDNN and cuBLASLt engines on the GPU, in a
 * build with the cuda backend; "ref": kiln's reference interpreter, no
 * engines, for checking results). docs/python.md lists them with their meaning.
 * An unknown name is KILN_ERROR_INVALID_ARGUMENT naming it. */

/* Default settings (kiln::CompileSettings{}). */
KILN_API kiln_status kiln_settings_create(kiln_settings** settings_out);
/* A deep copy; a user cache set on `settings` is shared, not copied. */
KILN_API kiln_status kiln_settings_clone(const kiln_settings* settings, kiln_settings** settings_out);
KILN_API void kiln_settings_destroy(kiln_settings* settings);
/* Sets one setting from text: booleans "true"/"false"/"1"/"0", integers in
 * decimal, paths as they are, lists (engine_cache_tiers,
 * enabled_precisions) comma-separated. On failure nothing changes. */
KILN_API kiln_status kiln_settings_set(kiln_settings* settings, const char* name, const char* value);
/* Sets every member of a JSON object, e.g. {"engine_cache_dir": "/tmp/x",
 * "optimization_level": 0, "enabled_precisions": ["fp32"]}: JSON booleans,
 * numbers, strings and arrays of strings (or the text forms above). All or
 * nothing: on failure no setting changes. */
KILN_API kiln_status kiln_settings_set_json(kiln_settings* settings, const char* json_object);
/* Every setting and its value as a JSON object (the user cache, if any, as
 * "custom_engine_cache": true). Release with kiln_free. */
KILN_API kiln_status kiln_settings_to_json(const kiln_settings* settings, char** json_out);

/* ---- User engine cache (the tutorial's BaseEngineCache) ---------------- */
/* A user cache replaces the built-in disk cache for compiles with these
 * settings: kiln calls `save` with each engine it builds and `load` before
 * building one. Keys are 64-character lowercase hex strings (NUL-ended).
 *
 * Callbacks may be called from any thread, kiln's own included, and from
 * several at once; they must not call back into kiln on the same settings.
 * They must return normally (a C++ callback must not throw through kiln).
 * A failing save or load is not an error of the compile: it is logged and
 * the compile goes on as after a miss. kiln verifies every loaded blob, so
 * a cache may return stale or damaged bytes without harm. */

/* Where a load callback puts what it found; valid only during the call. */
typedef struct kiln_cache_result kiln_cache_result;

/* Returns a kiln-owned buffer of `size` bytes for the load callback to
 * fill (zero copies), or NULL when out of memory. At most one of this and
 * kiln_cache_result_set per call. */
KILN_API void* kiln_cache_result_alloc(kiln_cache_result* result, size_t size);
/* Hands kiln the callback's own buffer: kiln copies the bytes and then,
 * before this function returns, calls `release(release_context)` (if not
 * NULL) exactly once, also when it fails. Returns KILN_OK, or an error
 * (the load is then a miss). */
KILN_API kiln_status kiln_cache_result_set(kiln_cache_result* result, const void* data, size_t size,
                                           void (*release)(void* release_context), void* release_context);

typedef struct kiln_cache_callbacks {
  /* sizeof(kiln_cache_callbacks) as the caller compiled it: the struct may
   * grow at its end without an ABI bump. */
  size_t struct_size;
  /* Passed to every callback; kiln never reads it. */
  void* user;
  /* Stores `size` bytes under `key`, replacing what was there. `blob` is
   * valid only during the call. Returns 0, or nonzero on failure. */
  int (*save)(void* user, const char* key, const void* blob, size_t size);
  /* Looks `key` up. Returns 1 for a hit (the bytes given through `result`),
   * 0 for a miss, a negative value for a failure (a miss with a warning). */
  int (*load)(void* user, const char* key, kiln_cache_result* result);
  /* Called once, when the last settings object holding the cache is
   * destroyed (kiln_settings_clone shares it; models do not hold it, and
   * settings must outlive the compiles that use them). May be NULL: `user`
   * must then stay valid until those settings are destroyed. */
  void (*destroy)(void* user);
} kiln_cache_callbacks;

/* Sets the user cache of `settings` (NULL removes it). The struct is
 * copied. */
KILN_API kiln_status kiln_settings_set_cache(kiln_settings* settings, const kiln_cache_callbacks* callbacks);

/* ---- Compile, load, save ---------------------------------------------- */

/* One model input: its dtype and the range of shapes the engine must run
 * (tactics are timed at `opt`). `opt` and `max` may be NULL: they then
 * equal `min` (a static input). `name` may be NULL or "": the model's
 * input at this position. Arrays are read during the call only. */
typedef struct kiln_input_spec {
  const char* name;
  kiln_dtype dtype;
  size_t rank;
  const int64_t* min_shape;
  const int64_t* opt_shape;
  const int64_t* max_shape;
} kiln_input_spec;

/* Compiles an ONNX model through the engine cache of `settings` (NULL:
 * defaults). `specs` has one entry per model input, in order; `num_specs`
 * 0 (specs may then be NULL) takes each input's declared shape, which
 * must then be static. External-data weights are read from the model's
 * folder (file form only). */
KILN_API kiln_status kiln_compile_file(const char* onnx_path, const kiln_input_spec* specs, size_t num_specs,
                                       const kiln_settings* settings, kiln_model** model_out);
/* The same from bytes, which are copied. */
KILN_API kiln_status kiln_compile_bytes(const void* onnx_bytes, size_t size, const kiln_input_spec* specs,
                                        size_t num_specs, const kiln_settings* settings,
                                        kiln_model** model_out);
/* Loads an AOT artifact written by kiln_model_save (or `kiln build`). Its
 * engines serve without a build when they were built for this machine;
 * otherwise the model it embeds is compiled through the engine cache of
 * `settings` (NULL: defaults). */
KILN_API kiln_status kiln_load(const char* artifact_path, const kiln_settings* settings,
                               kiln_model** model_out);
/* Writes the model, its engines and input specs to one artifact file,
 * atomically. Fails for models compiled with refittable off, with the
 * reference backend, or whose weights are in external data. */
KILN_API kiln_status kiln_model_save(const kiln_model* model, const char* artifact_path);
/* Waits for nothing: the caller must not destroy a model while it runs. */
KILN_API void kiln_model_destroy(kiln_model* model);

/* ---- Model information ------------------------------------------------ */

KILN_API size_t kiln_model_num_inputs(const kiln_model* model);
KILN_API size_t kiln_model_num_outputs(const kiln_model* model);
/* The name of input/output `index`; NULL when out of range. Owned by the
 * model. */
KILN_API const char* kiln_model_input_name(const kiln_model* model, size_t index);
KILN_API const char* kiln_model_output_name(const kiln_model* model, size_t index);
/* What the compile did, as a JSON object: {"backend": "cpu" | "ref",
 * "compile_ms": x, "engines": [{"key": hex, "status": "hit" | "miss" |
 * "built_uncached", "reason": why a miss missed, "build_ms", "load_ms",
 * "refit_ms"}, ...], "segments": [{"kind": "engine" | "fallback", "nodes",
 * "engine": index into "engines" | "reason": why it is not an engine,
 * "values_in", "bytes_in", "values_unsized": the values it reads from
 * earlier segments at every run, each passing through host memory, bytes
 * at the opt shapes, those sized only at run time not in bytes_in}, ...],
 * "last_refit": null before any kiln_model_refit, else {"weights",
 * "engines", "fallback_weights", "check_ms", "refit_ms"} of the last
 * successful one}. Release with kiln_free. */
KILN_API kiln_status kiln_model_report_json(const kiln_model* model, char** json_out);
/* The input specs as a JSON array of {"name", "dtype", "min", "opt",
 * "max"} (dtype as "float32", ...). Release with kiln_free. */
KILN_API kiln_status kiln_model_inputs_json(const kiln_model* model, char** json_out);

/* ---- Refit ------------------------------------------------------------ */

/* The model's refittable weights, what kiln_model_refit accepts, as a JSON
 * array of {"name", "dtype", "shape"} in canonical order: the float
 * initializers of more than one element that the model reads as data
 * (Conv/Gemm/MatMul weights and biases, normalization parameters, ...).
 * Other initializers are structural constants. Release with kiln_free. */
KILN_API kiln_status kiln_model_weights_json(const kiln_model* model, char** json_out);
/* Gives the model new values for `count` weights, in place, without a
 * compile: `names[i]` (an initializer name of the model) gets `values[i]`,
 * which must have the weight's dtype and shape. Every engine replays its
 * weight recipes (BatchNorm folding, transposes, reorders into the layouts
 * its tactics chose, for every input shape it has run) and fallback
 * segments recompute what they read; weights not named keep their values.
 * The values are copied during the call: the caller keeps ownership of the
 * names and tensors and may destroy them afterwards. All or nothing: an
 * unknown name, a structural constant, a name given twice, a NULL, or a
 * value of another dtype or shape is KILN_ERROR_INVALID_ARGUMENT naming the
 * initializer, and the model is unchanged. A model compiled with
 * refittable = false (immutable_weights = true) refuses. After a refit,
 * kiln_model_save refuses (the artifact would embed the compile-time
 * weights). Threads: a refit is a write of the model: it must not run
 * while kiln_model_run, kiln_model_run_into or another refit runs on the
 * same model (serialize them as runs are). The time it took is
 * "last_refit" in kiln_model_report_json. `count` 0 (names and values may
 * then be NULL) changes nothing. */
KILN_API kiln_status kiln_model_refit(kiln_model* model, const char* const* names,
                                      const kiln_tensor* const* values, size_t count);

/* ---- Run -------------------------------------------------------------- */

/* Runs the model on `inputs` (model input order, each within its spec's
 * range). Input memory is read in place, never copied, and not kept after
 * the call. On KILN_OK, `outputs_out[i]` receives a new kiln-owned tensor
 * for each of the `num_outputs` (== kiln_model_num_outputs) outputs; the
 * caller destroys each. Outputs never share memory with the inputs. */
KILN_API kiln_status kiln_model_run(kiln_model* model, const kiln_tensor* const* inputs, size_t num_inputs,
                                    kiln_tensor** outputs_out, size_t num_outputs);
/* The same, writing each output into the caller's tensor `outputs[i]`
 * (from kiln_tensor_create or kiln_tensor_wrap_mutable), whose dtype and
 * shape must match the output's; KILN_ERROR_INVALID_ARGUMENT naming the
 * output otherwise (the buffers may then be partly written). */
KILN_API kiln_status kiln_model_run_into(kiln_model* model, const kiln_tensor* const* inputs,
                                         size_t num_inputs, kiln_tensor* const* outputs, size_t num_outputs);

/* ---- Run on device memory (backend "cuda") ----------------------------- */
/* A model compiled for backend "cuda" whose whole graph is one engine (no
 * segment falls back to the host) runs on device memory: inputs are read
 * from, and outputs written into, the caller's CUDA allocations, ordered
 * on the caller's CUDA stream, with no copy through the host and no host
 * synchronisation. The two-copy, synchronising host path (kiln_model_run)
 * keeps working on the same model.
 *
 * Stream semantics: kiln_model_run_into_stream enqueues the run and
 * returns. The run starts after all work enqueued on `cuda_stream` before
 * the call (so a kernel that produced an input, on that stream, has
 * finished) and all work enqueued on `cuda_stream` after the call starts
 * after the run (so a consumer of an output, on that stream, sees it). It
 * behaves as if enqueued on `cuda_stream` itself; kiln runs it on a stream
 * of its own joined to the caller's with two CUDA events, because the
 * model's cuDNN and cuBLASLt handles and CUDA graphs are bound to it. Work
 * on other streams is not ordered: synchronise them with the caller's
 * stream first. Errors found before enqueuing (a shape, dtype, device or
 * host pointer) are returned; a fault inside a kernel shows at the
 * caller's next synchronisation, as for any asynchronous CUDA work.
 *
 * Memory: inputs must stay allocated and unchanged, and outputs allocated
 * and unread, until the run has finished on the stream: with a stream-
 * ordered allocator (PyTorch's caching allocator, cudaMallocAsync) freeing
 * them on `cuda_stream` after the call is enough. kiln keeps no pointer
 * after the call.
 *
 * CUDA graphs: from the second run at one set of input shapes on, the
 * model's kernel launches replay as one CUDA graph captured once; a refit
 * drops the graphs, a new shape set captures its own. The environment
 * variable KILN_CUDA_GRAPHS=0 turns graphs off (launches one by one).
 *
 * Threads: a device run is a run of the model (one at a time per model, as
 * kiln_model_run; kiln_model_refit must not run concurrently). */

/* A writable tensor header over the caller's device memory (no copy, no
 * ownership): `device_data` is a CUDA device (or managed) address of
 * device `device_index` (the CUDA ordinal, 0 or more) holding the element
 * count times kiln_dtype_size(dtype) bytes; NULL only for an empty tensor.
 * Nothing is checked against the GPU here (the run checks the pointer).
 * kiln_tensor_data and kiln_tensor_mutable_data return the device address;
 * host functions (kiln_model_run, kiln_model_run_into, kiln_model_refit)
 * refuse a device tensor with KILN_ERROR_INVALID_ARGUMENT naming it. */
KILN_API kiln_status kiln_tensor_wrap_device(kiln_dtype dtype, const int64_t* shape, size_t rank,
                                             void* device_data, int device_index, kiln_tensor** tensor_out);
/* The CUDA device ordinal of a device tensor; -1 for a host tensor or
 * NULL. */
KILN_API int kiln_tensor_device(const kiln_tensor* tensor);
/* KILN_OK when `model` can run on device memory; otherwise
 * KILN_ERROR_UNSUPPORTED, and kiln_last_error() says why: the backend
 * ("cpu", "ref") runs on the host, or which segment (its first node) runs
 * on the host and why. */
KILN_API kiln_status kiln_model_check_device_io(const kiln_model* model);
/* The dtype and shape output `index` has for inputs of the dtypes and
 * shapes of `inputs` (host or device tensors; only their dtypes and shapes
 * are read), without running: what to allocate for
 * kiln_model_run_into_stream. The shape goes to `shape_out` (room for
 * `shape_capacity` dims; may be NULL for a scalar) and its rank to
 * `*rank_out`. The first call at new input shapes prepares the model for
 * them (device memory, library plans). Errors: as kiln_model_check_device_io,
 * and KILN_ERROR_INVALID_ARGUMENT for inputs outside their specs, an
 * index out of range, or a shape of more than `shape_capacity` dims. A
 * write of the model, like a run. */
KILN_API kiln_status kiln_model_output_info(kiln_model* model, const kiln_tensor* const* inputs,
                                            size_t num_inputs, size_t index, kiln_dtype* dtype_out,
                                            int64_t* shape_out, size_t shape_capacity, size_t* rank_out);
/* Enqueues one run on `cuda_stream` (a cudaStream_t; NULL is the legacy
 * default stream) with `inputs` and `outputs` device tensors
 * (kiln_tensor_wrap_device) of the model's device, the outputs of
 * kiln_model_output_info's dtypes and shapes, and returns without waiting
 * (the stream semantics above). KILN_ERROR_UNSUPPORTED as
 * kiln_model_check_device_io; KILN_ERROR_INVALID_ARGUMENT naming the tensor
 * for a host tensor, a host or foreign-device pointer, a dtype or shape
 * that does not match, or a count that differs from the model's. */
KILN_API kiln_status kiln_model_run_into_stream(kiln_model* model, const kiln_tensor* const* inputs,
                                                size_t num_inputs, kiln_tensor* const* outputs,
                                                size_t num_outputs, void* cuda_stream);

/* ---- Tensors ---------------------------------------------------------- */

/* A new zero-filled, kiln-owned, writable tensor. `shape` may be NULL when
 * `rank` is 0 (a scalar); it is copied. */
KILN_API kiln_status kiln_tensor_create(kiln_dtype dtype, const int64_t* shape, size_t rank,
                                        kiln_tensor** tensor_out);
/* A read-only tensor over the caller's memory (no copy): `byte_size` must
 * equal the element count times kiln_dtype_size(dtype). The memory must
 * stay valid, and unchanged while a run reads it, until the tensor is
 * destroyed. */
KILN_API kiln_status kiln_tensor_wrap(kiln_dtype dtype, const int64_t* shape, size_t rank, const void* data,
                                      size_t byte_size, kiln_tensor** tensor_out);
/* The same, writable: for kiln_model_run_into's outputs. */
KILN_API kiln_status kiln_tensor_wrap_mutable(kiln_dtype dtype, const int64_t* shape, size_t rank, void* data,
                                              size_t byte_size, kiln_tensor** tensor_out);
KILN_API void kiln_tensor_destroy(kiln_tensor* tensor);
KILN_API kiln_dtype kiln_tensor_dtype(const kiln_tensor* tensor);
KILN_API size_t kiln_tensor_rank(const kiln_tensor* tensor);
/* `rank` dims, owned by the tensor. */
KILN_API const int64_t* kiln_tensor_shape(const kiln_tensor* tensor);
KILN_API size_t kiln_tensor_byte_size(const kiln_tensor* tensor);
/* The elements, row-major; owned by the tensor (or its wrapped memory). */
KILN_API const void* kiln_tensor_data(const kiln_tensor* tensor);
/* NULL for a read-only tensor (kiln_tensor_wrap). */
KILN_API void* kiln_tensor_mutable_data(kiln_tensor* tensor);

/* ---- Built-in models -------------------------------------------------- */

/* The ONNX bytes of a built-in zoo model (`kiln zoo` lists them, e.g.
 * "resnet_tiny", "mobilenet_tiny") with weights from `seed`; `batch` <= 0
 * gives a symbolic batch dim. Nothing is downloaded. Release *bytes_out
 * with kiln_free. */
KILN_API kiln_status kiln_zoo_model(const char* name, uint64_t seed, int64_t batch, void** bytes_out,
                                    size_t* size_out);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* KILN_KILN_H_ */
