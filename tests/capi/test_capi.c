/* The C API driven from C: compile a zoo model, run it against the
 * reference backend, save and load an artifact, a callback cache that sees
 * one save and then a hit with other weights, in-place refit, and the error
 * paths. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kiln/kiln.h"

static int g_failures = 0;

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      ++g_failures;                                                            \
    }                                                                          \
  } while (0)

/* Stops the test: later steps need this one's result. */
#define REQUIRE_OK(call)                                                                           \
  do {                                                                                             \
    kiln_status status_ = (call);                                                                  \
    if (status_ != KILN_OK) {                                                                      \
      fprintf(stderr, "%s:%d: %s: %s: %s\n", __FILE__, __LINE__, #call, kiln_status_name(status_), \
              kiln_last_error());                                                                  \
      exit(1);                                                                                     \
    }                                                                                              \
  } while (0)

/* ---- A RAM cache in callbacks ---- */

#define MAX_ENTRIES 16
typedef struct ram_cache {
  char keys[MAX_ENTRIES][65];
  void* blobs[MAX_ENTRIES];
  size_t sizes[MAX_ENTRIES];
  int count;
  int saves, loads, hits, destroyed;
} ram_cache;

static int ram_save(void* user, const char* key, const void* blob, size_t size) {
  ram_cache* cache = (ram_cache*)user;
  if (cache->count == MAX_ENTRIES || strlen(key) != 64) return -1;
  strcpy(cache->keys[cache->count], key);
  cache->blobs[cache->count] = malloc(size);
  memcpy(cache->blobs[cache->count], blob, size);
  cache->sizes[cache->count] = size;
  ++cache->count;
  ++cache->saves;
  return 0;
}

static void release_nothing(void* context) { (void)context; }

static int ram_load(void* user, const char* key, kiln_cache_result* result) {
  ram_cache* cache = (ram_cache*)user;
  int i;
  ++cache->loads;
  for (i = 0; i < cache->count; ++i) {
    if (strcmp(cache->keys[i], key) == 0) {
      ++cache->hits;
      /* Alternate between the two ways of handing bytes back. */
      if (cache->hits % 2 == 1) {
        void* memory = kiln_cache_result_alloc(result, cache->sizes[i]);
        if (!memory) return -1;
        memcpy(memory, cache->blobs[i], cache->sizes[i]);
      } else if (kiln_cache_result_set(result, cache->blobs[i], cache->sizes[i], release_nothing, NULL) !=
                 KILN_OK) {
        return -1;
      }
      return 1;
    }
  }
  return 0;
}

static void ram_destroy(void* user) { ((ram_cache*)user)->destroyed++; }

/* ---- Helpers ---- */

static kiln_tensor* ramp_input(int64_t batch, float* storage) {
  int64_t shape[4] = {batch, 3, 64, 64};
  size_t n = (size_t)(batch * 3 * 64 * 64), i;
  kiln_tensor* t = NULL;
  for (i = 0; i < n; ++i) storage[i] = (float)((i * 7919) % 1000) / 500.0f - 1.0f;
  REQUIRE_OK(kiln_tensor_wrap(KILN_FLOAT32, shape, 4, storage, n * sizeof(float), &t));
  return t;
}

/* max |a - b| <= 1e-4 * max |b| */
static int close_to(const kiln_tensor* a, const kiln_tensor* b, int verbose) {
  const float* x = (const float*)kiln_tensor_data(a);
  const float* y = (const float*)kiln_tensor_data(b);
  size_t n = kiln_tensor_byte_size(b) / sizeof(float), i;
  float diff = 0, scale = 0;
  if (kiln_tensor_byte_size(a) != kiln_tensor_byte_size(b) || kiln_tensor_dtype(a) != KILN_FLOAT32) return 0;
  for (i = 0; i < n; ++i) {
    if (fabsf(x[i] - y[i]) > diff) diff = fabsf(x[i] - y[i]);
    if (fabsf(y[i]) > scale) scale = fabsf(y[i]);
  }
  if (verbose && !(diff <= 1e-4f * scale)) fprintf(stderr, "max diff %g, max |ref| %g\n", diff, scale);
  return diff <= 1e-4f * scale && scale > 0;
}

static kiln_model* compile_bytes(const void* bytes, size_t size, const kiln_settings* settings) {
  int64_t min[4] = {1, 3, 64, 64}, opt[4] = {2, 3, 64, 64}, max[4] = {4, 3, 64, 64};
  kiln_input_spec spec = {NULL, KILN_FLOAT32, 4, min, opt, max};
  kiln_model* model = NULL;
  REQUIRE_OK(kiln_compile_bytes(bytes, size, &spec, 1, settings, &model));
  return model;
}

static kiln_tensor* run1(kiln_model* model, const kiln_tensor* input) {
  kiln_tensor* out = NULL;
  REQUIRE_OK(kiln_model_run(model, &input, 1, &out, 1));
  return out;
}

static int report_has(const kiln_model* model, const char* text) {
  char* json = NULL;
  int found;
  REQUIRE_OK(kiln_model_report_json(model, &json));
  found = strstr(json, text) != NULL;
  kiln_free(json);
  return found;
}

/* ---- Refit ---- */

#define MAX_WEIGHTS 64
typedef struct weight_list {
  int count;
  char names[MAX_WEIGHTS][128];
  int64_t shapes[MAX_WEIGHTS][8];
  size_t ranks[MAX_WEIGHTS];
} weight_list;

/* Reads kiln_model_weights_json's array, whose objects' members are
 * "dtype", "name", "shape" in that order. */
static void read_weights(const kiln_model* model, weight_list* list) {
  char* json = NULL;
  const char* p;
  REQUIRE_OK(kiln_model_weights_json(model, &json));
  list->count = 0;
  for (p = strstr(json, "\"name\":\""); p != NULL && list->count < MAX_WEIGHTS;
       p = strstr(p, "\"name\":\"")) {
    const char* end;
    size_t len;
    int i = list->count++;
    p += strlen("\"name\":\"");
    end = strchr(p, '"');
    len = (size_t)(end - p) < sizeof list->names[i] - 1 ? (size_t)(end - p) : sizeof list->names[i] - 1;
    memcpy(list->names[i], p, len);
    list->names[i][len] = '\0';
    p = strstr(end, "\"shape\":[") + strlen("\"shape\":[");
    list->ranks[i] = 0;
    while (*p != ']' && list->ranks[i] < 8) {
      char* after;
      list->shapes[i][list->ranks[i]++] = strtoll(p, &after, 10);
      p = *after == ',' ? after + 1 : after;
    }
  }
  CHECK(strstr(json, "\"dtype\":\"float32\"") != NULL);
  kiln_free(json);
}

/* Values in [0.05, 0.15): positive (BatchNorm variances) and small. */
static kiln_tensor* synthetic_weight(const weight_list* list, int i, int salt) {
  kiln_tensor* t = NULL;
  float* v;
  size_t n = 1, k;
  for (k = 0; k < list->ranks[i]; ++k) n *= (size_t)list->shapes[i][k];
  REQUIRE_OK(kiln_tensor_create(KILN_FLOAT32, list->shapes[i], list->ranks[i], &t));
  v = (float*)kiln_tensor_mutable_data(t);
  for (k = 0; k < n; ++k) v[k] = 0.1f + 0.05f * sinf((float)(k * 37 + (size_t)i * 11 + (size_t)salt));
  return t;
}

/* Refits `model` (cpu engines) and `ref` (reference backend), compiled
 * from the same file, with the same new values: they agree again, and
 * differ from before. Bad updates fail with a message and change nothing.
 * A model compiled with refittable off refuses. */
static void refit_checks(kiln_model* model, kiln_model* ref, const kiln_tensor* input, const void* bytes,
                         size_t size, const kiln_settings* settings) {
  weight_list list;
  kiln_tensor* values[MAX_WEIGHTS];
  const char* names[MAX_WEIGHTS];
  kiln_tensor *before, *after, *ref_after, *again;
  int i;
  read_weights(model, &list);
  CHECK(list.count > 4 && list.count < MAX_WEIGHTS);
  {
    weight_list ref_list;
    read_weights(ref, &ref_list);
    CHECK(ref_list.count == list.count);
  }
  for (i = 0; i < list.count; ++i) {
    names[i] = list.names[i];
    values[i] = synthetic_weight(&list, i, 0);
  }
  before = run1(model, input);
  CHECK(report_has(model, "\"last_refit\":null"));

  /* Errors: all or nothing, the model unchanged. */
  {
    const char* bad_names[2];
    const kiln_tensor* bad_values[2];
    kiln_tensor* wrong_shape = NULL;
    int64_t shape[1] = {3};
    REQUIRE_OK(kiln_tensor_create(KILN_FLOAT32, shape, 1, &wrong_shape));
    bad_names[0] = names[0];
    bad_values[0] = values[0];
    bad_names[1] = "no_such_weight";
    bad_values[1] = values[1];
    CHECK(kiln_model_refit(model, bad_names, bad_values, 2) == KILN_ERROR_INVALID_ARGUMENT);
    CHECK(strstr(kiln_last_error(), "no_such_weight") != NULL);
    bad_names[1] = names[1];
    bad_values[1] = wrong_shape;
    CHECK(kiln_model_refit(model, bad_names, bad_values, 2) == KILN_ERROR_INVALID_ARGUMENT);
    CHECK(strstr(kiln_last_error(), names[1]) != NULL && strstr(kiln_last_error(), "float32[3]") != NULL);
    bad_values[1] = NULL;
    CHECK(kiln_model_refit(model, bad_names, bad_values, 2) == KILN_ERROR_INVALID_ARGUMENT);
    CHECK(strstr(kiln_last_error(), "NULL") != NULL);
    CHECK(kiln_model_refit(ref, bad_names, bad_values, 2) == KILN_ERROR_INVALID_ARGUMENT);
    CHECK(kiln_model_refit(NULL, NULL, NULL, 0) == KILN_ERROR_INVALID_ARGUMENT);
    REQUIRE_OK(kiln_model_refit(model, NULL, NULL, 0));
    kiln_tensor_destroy(wrong_shape);
    again = run1(model, input);
    CHECK(memcmp(kiln_tensor_data(again), kiln_tensor_data(before), kiln_tensor_byte_size(before)) == 0);
    kiln_tensor_destroy(again);
  }

  REQUIRE_OK(kiln_model_refit(model, names, (const kiln_tensor* const*)values, (size_t)list.count));
  REQUIRE_OK(kiln_model_refit(ref, names, (const kiln_tensor* const*)values, (size_t)list.count));
  /* The values were copied: overwriting and destroying them changes nothing. */
  for (i = 0; i < list.count; ++i) {
    memset(kiln_tensor_mutable_data(values[i]), 0, kiln_tensor_byte_size(values[i]));
    kiln_tensor_destroy(values[i]);
  }
  after = run1(model, input);
  ref_after = run1(ref, input);
  CHECK(close_to(after, ref_after, 1));
  CHECK(!close_to(after, before, 0));
  kiln_tensor_destroy(before);
  CHECK(report_has(model, "\"refit_ms\""));
  CHECK(!report_has(model, "\"last_refit\":null"));
  {
    char artifact[] = "/tmp/kiln-capi-refit-never-written.kiln";
    CHECK(kiln_model_save(model, artifact) == KILN_ERROR_INVALID_ARGUMENT);
    CHECK(strstr(kiln_last_error(), "refitted") != NULL);
  }

  /* refittable off: refused, outputs unchanged. */
  {
    kiln_settings* immutable = NULL;
    kiln_model* fixed = NULL;
    const kiln_tensor* one[1];
    REQUIRE_OK(kiln_settings_clone(settings, &immutable));
    REQUIRE_OK(kiln_settings_set_json(
        immutable,
        "{\"immutable_weights\": true, \"cache_built_engines\": false, \"reuse_cached_engines\": false}"));
    fixed = compile_bytes(bytes, size, immutable);
    before = run1(fixed, input);
    one[0] = synthetic_weight(&list, 0, 1);
    CHECK(kiln_model_refit(fixed, names, one, 1) == KILN_ERROR_INVALID_ARGUMENT);
    CHECK(strstr(kiln_last_error(), "refittable") != NULL);
    again = run1(fixed, input);
    CHECK(memcmp(kiln_tensor_data(again), kiln_tensor_data(before), kiln_tensor_byte_size(before)) == 0);
    kiln_tensor_destroy((kiln_tensor*)one[0]);
    kiln_tensor_destroy(again);
    kiln_tensor_destroy(before);
    kiln_model_destroy(fixed);
    kiln_settings_destroy(immutable);
  }
  kiln_tensor_destroy(after);
  kiln_tensor_destroy(ref_after);
}

/* ---- Device tensors, seen from a host ---- */

/* What a host can check of the device API: a cpu-backend or reference
 * model refuses device runs with a reason, and host runs and refit refuse
 * device tensors (whose memory no host code may read) naming them. The
 * device address is a host buffer that nothing may touch. */
static void device_io_checks(kiln_model* model, kiln_model* ref, const kiln_tensor* input) {
  static float never_read[2 * 3 * 64 * 64];
  int64_t shape[4] = {2, 3, 64, 64}, out_shape[2] = {2, 10}, dims[8];
  kiln_tensor *dev_in = NULL, *dev_out = NULL, *out = NULL;
  kiln_dtype dtype = KILN_FLOAT32;
  size_t rank = 99;

  CHECK(kiln_tensor_device(input) == -1);
  CHECK(kiln_tensor_device(NULL) == -1);
  REQUIRE_OK(kiln_tensor_wrap_device(KILN_FLOAT32, shape, 4, never_read, 0, &dev_in));
  REQUIRE_OK(kiln_tensor_wrap_device(KILN_FLOAT32, out_shape, 2, never_read, 0, &dev_out));
  CHECK(kiln_tensor_device(dev_in) == 0);
  CHECK(kiln_tensor_dtype(dev_in) == KILN_FLOAT32 && kiln_tensor_rank(dev_in) == 4);
  CHECK(kiln_tensor_byte_size(dev_in) == sizeof never_read);
  CHECK(kiln_tensor_data(dev_in) == (const void*)never_read);
  CHECK(kiln_tensor_wrap_device(KILN_FLOAT32, shape, 4, never_read, -1, &out) == KILN_ERROR_INVALID_ARGUMENT);
  CHECK(strstr(kiln_last_error(), "device_index") != NULL);
  CHECK(kiln_tensor_wrap_device(KILN_FLOAT32, shape, 4, NULL, 0, &out) == KILN_ERROR_INVALID_ARGUMENT);
  CHECK(out == NULL);

  /* The cpu backend's engines run on the host. */
  CHECK(kiln_model_check_device_io(model) == KILN_ERROR_UNSUPPORTED);
  CHECK(strstr(kiln_last_error(), "backend 'cpu'") != NULL);
  CHECK(kiln_model_run_into_stream(model, (const kiln_tensor* const*)&dev_in, 1, &dev_out, 1, NULL) ==
        KILN_ERROR_UNSUPPORTED);
  CHECK(strstr(kiln_last_error(), "backend 'cuda'") != NULL);
  CHECK(kiln_model_output_info(model, &input, 1, 0, &dtype, dims, 8, &rank) == KILN_ERROR_UNSUPPORTED);
  CHECK(rank == 99);
  /* The reference interpreter too. */
  CHECK(kiln_model_check_device_io(ref) == KILN_ERROR_UNSUPPORTED);
  CHECK(strstr(kiln_last_error(), "reference") != NULL);
  CHECK(kiln_model_check_device_io(NULL) == KILN_ERROR_INVALID_ARGUMENT);

  /* Host entry points refuse device tensors before reading them. */
  CHECK(kiln_model_run(model, (const kiln_tensor* const*)&dev_in, 1, &out, 1) == KILN_ERROR_INVALID_ARGUMENT);
  CHECK(strstr(kiln_last_error(), "CUDA device 0") != NULL);
  CHECK(out == NULL);
  CHECK(kiln_model_run(ref, (const kiln_tensor* const*)&dev_in, 1, &out, 1) == KILN_ERROR_INVALID_ARGUMENT);
  CHECK(kiln_model_run_into(model, &input, 1, &dev_out, 1) == KILN_ERROR_INVALID_ARGUMENT);
  CHECK(strstr(kiln_last_error(), "output 0") != NULL);
  {
    weight_list weights;
    const char* names[1];
    read_weights(model, &weights);
    names[0] = weights.names[0];
    CHECK(kiln_model_refit(model, names, (const kiln_tensor* const*)&dev_in, 1) ==
          KILN_ERROR_INVALID_ARGUMENT);
    CHECK(strstr(kiln_last_error(), weights.names[0]) != NULL);
  }
  kiln_tensor_destroy(dev_in);
  kiln_tensor_destroy(dev_out);
}

int main(void) {
  char dir[] = "/tmp/kiln-capi-XXXXXX";
  char path[256], artifact[256], cache_dir[256], command[300];
  void* bytes1 = NULL;
  void* bytes2 = NULL;
  size_t size1 = 0, size2 = 0;
  ram_cache cache;
  kiln_cache_callbacks callbacks;
  kiln_settings* settings = NULL;
  kiln_settings* ref_settings = NULL;
  kiln_model *model = NULL, *ref = NULL, *hit = NULL, *ref2 = NULL, *loaded = NULL;
  kiln_tensor *input, *out, *ref_out, *hit_out, *ref2_out, *loaded_out, *into = NULL;
  float* storage = malloc(sizeof(float) * 2 * 3 * 64 * 64);
  FILE* file;

  CHECK(kiln_abi_version() == KILN_ABI_VERSION);
  CHECK(kiln_abi_minor_version() == KILN_ABI_MINOR_VERSION);
  CHECK(strlen(kiln_version()) > 0);
  if (!mkdtemp(dir)) return 1;
  snprintf(path, sizeof path, "%s/resnet_tiny.onnx", dir);
  snprintf(artifact, sizeof artifact, "%s/resnet_tiny.kiln", dir);
  snprintf(cache_dir, sizeof cache_dir, "%s/cache", dir);

  REQUIRE_OK(kiln_zoo_model("resnet_tiny", 1, 0, &bytes1, &size1));
  REQUIRE_OK(kiln_zoo_model("resnet_tiny", 2, 0, &bytes2, &size2));
  file = fopen(path, "wb");
  fwrite(bytes1, 1, size1, file);
  fclose(file);

  /* Settings: by name and as JSON; an unknown name is an error naming it. */
  REQUIRE_OK(kiln_settings_create(&settings));
  REQUIRE_OK(kiln_settings_set(settings, "engine_cache_dir", cache_dir));
  REQUIRE_OK(kiln_settings_set_json(settings, "{\"optimization_level\": 0, \"timing_cache_path\": \"-\"}"));
  CHECK(kiln_settings_set(settings, "engine_cache_dri", "/x") == KILN_ERROR_INVALID_ARGUMENT);
  CHECK(strstr(kiln_last_error(), "engine_cache_dri") != NULL);
  CHECK(kiln_settings_set(settings, "optimization_level", "fast") == KILN_ERROR_INVALID_ARGUMENT);
  CHECK(strstr(kiln_last_error(), "optimization_level") != NULL);
  CHECK(kiln_settings_set_json(settings, "{\"refittable\": true, \"bogus\": 1}") ==
        KILN_ERROR_INVALID_ARGUMENT);
  CHECK(strstr(kiln_last_error(), "bogus") != NULL);

  memset(&cache, 0, sizeof cache);
  memset(&callbacks, 0, sizeof callbacks);
  callbacks.struct_size = sizeof callbacks;
  callbacks.user = &cache;
  callbacks.save = ram_save;
  callbacks.load = ram_load;
  callbacks.destroy = ram_destroy;
  REQUIRE_OK(kiln_settings_set_cache(settings, &callbacks));

  REQUIRE_OK(kiln_settings_clone(settings, &ref_settings));
  REQUIRE_OK(kiln_settings_set(ref_settings, "backend", "ref"));

  /* First compile, from the file: one build, one save. */
  {
    int64_t min[4] = {1, 3, 64, 64}, opt[4] = {2, 3, 64, 64}, max[4] = {4, 3, 64, 64};
    kiln_input_spec spec = {NULL, KILN_FLOAT32, 4, min, opt, max};
    REQUIRE_OK(kiln_compile_file(path, &spec, 1, settings, &model));
  }
  CHECK(cache.saves == 1);
  CHECK(cache.hits == 0);
  CHECK(report_has(model, "\"miss\""));
  CHECK(kiln_model_num_inputs(model) == 1 && kiln_model_num_outputs(model) == 1);
  CHECK(kiln_model_input_name(model, 0) != NULL && kiln_model_input_name(model, 1) == NULL);

  input = ramp_input(2, storage);
  out = run1(model, input);
  CHECK(kiln_tensor_rank(out) == 2 && kiln_tensor_shape(out)[0] == 2 && kiln_tensor_shape(out)[1] == 10);
  ref = compile_bytes(bytes1, size1, ref_settings);
  ref_out = run1(ref, input);
  CHECK(close_to(out, ref_out, 1));
  CHECK(report_has(ref, "\"backend\":\"ref\""));

  /* Outputs into the caller's buffer. */
  {
    float buffer[20];
    int64_t shape[2] = {2, 10};
    REQUIRE_OK(kiln_tensor_wrap_mutable(KILN_FLOAT32, shape, 2, buffer, sizeof buffer, &into));
    REQUIRE_OK(kiln_model_run_into(model, (const kiln_tensor* const*)&input, 1, &into, 1));
    CHECK(memcmp(buffer, kiln_tensor_data(out), sizeof buffer) == 0);
    kiln_tensor_destroy(into);
  }

  /* Same architecture, other weights: a hit in the callback cache that
   * gives the other model's outputs. */
  hit = compile_bytes(bytes2, size2, settings);
  CHECK(cache.saves == 1);
  CHECK(cache.hits == 1);
  CHECK(report_has(hit, "\"hit\""));
  hit_out = run1(hit, input);
  ref2 = compile_bytes(bytes2, size2, ref_settings);
  ref2_out = run1(ref2, input);
  CHECK(close_to(hit_out, ref2_out, 1));
  CHECK(!close_to(hit_out, ref_out, 0));

  /* Artifact round trip. */
  REQUIRE_OK(kiln_model_save(model, artifact));
  REQUIRE_OK(kiln_load(artifact, settings, &loaded));
  loaded_out = run1(loaded, input);
  CHECK(close_to(loaded_out, ref_out, 1));
  CHECK(kiln_model_save(ref, artifact) == KILN_ERROR_INVALID_ARGUMENT);

  /* In-place refit (after the artifact: a refitted model cannot be saved). */
  refit_checks(model, ref, input, bytes1, size1, settings);

  device_io_checks(model, ref, input);

  /* Error paths: a code and a message. */
  {
    kiln_model* none = NULL;
    kiln_tensor* bad = NULL;
    kiln_tensor* outs[1] = {NULL};
    int64_t shape[4] = {5, 3, 64, 64};
    float* big = calloc(5 * 3 * 64 * 64, sizeof(float));
    CHECK(kiln_compile_file("/nonexistent/model.onnx", NULL, 0, settings, &none) != KILN_OK);
    CHECK(none == NULL);
    CHECK(strstr(kiln_last_error(), "/nonexistent/model.onnx") != NULL);
    CHECK(kiln_compile_bytes("not onnx", 8, NULL, 0, settings, &none) == KILN_ERROR_INVALID_MODEL);
    CHECK(strlen(kiln_last_error()) > 0);
    REQUIRE_OK(kiln_tensor_wrap(KILN_FLOAT32, shape, 4, big, 5 * 3 * 64 * 64 * sizeof(float), &bad));
    CHECK(kiln_model_run(model, (const kiln_tensor* const*)&bad, 1, outs, 1) == KILN_ERROR_INVALID_ARGUMENT);
    CHECK(strstr(kiln_last_error(), "outside the compiled range") != NULL);
    CHECK(outs[0] == NULL);
    CHECK(kiln_model_run(ref, (const kiln_tensor* const*)&bad, 1, outs, 1) == KILN_ERROR_INVALID_ARGUMENT);
    kiln_tensor_destroy(bad);
    CHECK(kiln_tensor_wrap(KILN_FLOAT32, shape, 4, big, 12, &bad) == KILN_ERROR_INVALID_ARGUMENT);
    CHECK(kiln_model_run(NULL, NULL, 0, NULL, 0) == KILN_ERROR_INVALID_ARGUMENT);
    CHECK(kiln_load(path, settings, &none) == KILN_ERROR_INVALID_MODEL);
    free(big);
  }

  kiln_tensor_destroy(input);
  kiln_tensor_destroy(out);
  kiln_tensor_destroy(ref_out);
  kiln_tensor_destroy(hit_out);
  kiln_tensor_destroy(ref2_out);
  kiln_tensor_destroy(loaded_out);
  kiln_model_destroy(model);
  kiln_model_destroy(ref);
  kiln_model_destroy(hit);
  kiln_model_destroy(ref2);
  kiln_model_destroy(loaded);
  kiln_settings_destroy(settings);
  CHECK(cache.destroyed == 0); /* the clone still holds the cache */
  kiln_settings_destroy(ref_settings);
  CHECK(cache.destroyed == 1);
  while (cache.count > 0) free(cache.blobs[--cache.count]);
  kiln_free(bytes1);
  kiln_free(bytes2);
  free(storage);
  snprintf(command, sizeof command, "rm -rf '%s'", dir);
  if (system(command) != 0) ++g_failures;

  if (g_failures)
    fprintf(stderr, "%d checks failed\n", g_failures);
  else
    printf("capi: all checks passed\n");
  return g_failures ? 1 : 0;
}
