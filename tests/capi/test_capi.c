/* The C API driven from C: compile a zoo model, run it against the
 * reference backend, save and load an artifact, a callback cache that sees
 * one save and then a hit with other weights, and the error paths. */
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
