/* Compiles and runs a zoo model through the installed libkiln. */
#include <kiln/kiln.h>
#include <stdio.h>
#include <stdlib.h>

#define OK(call)                                           \
  if ((call) != KILN_OK) {                                 \
    fprintf(stderr, "%s: %s\n", #call, kiln_last_error()); \
    return 1;                                              \
  }

int main(void) {
  void* bytes = NULL;
  size_t size = 0;
  kiln_settings* settings = NULL;
  kiln_model* model = NULL;
  kiln_tensor* input = NULL;
  kiln_tensor* output = NULL;
  int64_t shape[4] = {1, 3, 64, 64};
  static float data[3 * 64 * 64];
  if (kiln_abi_version() != KILN_ABI_VERSION) return 1;
  OK(kiln_zoo_model("resnet_tiny", 0, 1, &bytes, &size));
  OK(kiln_settings_create(&settings));
  OK(kiln_settings_set_json(settings,
                            "{\"optimization_level\": 0, \"timing_cache_path\": \"-\", "
                            "\"cache_built_engines\": false, \"reuse_cached_engines\": false}"));
  OK(kiln_compile_bytes(bytes, size, NULL, 0, settings, &model));
  OK(kiln_tensor_wrap(KILN_FLOAT32, shape, 4, data, sizeof data, &input));
  OK(kiln_model_run(model, (const kiln_tensor* const*)&input, 1, &output, 1));
  printf("kiln %s: output %lldx%lld\n", kiln_version(), (long long)kiln_tensor_shape(output)[0],
         (long long)kiln_tensor_shape(output)[1]);
  kiln_tensor_destroy(output);
  kiln_tensor_destroy(input);
  kiln_model_destroy(model);
  kiln_settings_destroy(settings);
  kiln_free(bytes);
  return 0;
}
