/* shoal kernels: the module's exports (the kernels and their files: kernels.h). */
#include "kernels.h"

static napi_value init(napi_env env, napi_value exports) {
  shoal_kernels_detect_isa();
  napi_property_descriptor props[] = {
    {"reduce", NULL, js_reduce, NULL, NULL, NULL, napi_default, NULL},
    {"reduceF16", NULL, js_reduce_f16, NULL, NULL, NULL, napi_default, NULL},
    {"f32ToF16", NULL, js_f32_to_f16, NULL, NULL, NULL, napi_default, NULL},
    {"f16ToF32", NULL, js_f16_to_f32, NULL, NULL, NULL, napi_default, NULL},
    {"scale", NULL, js_scale, NULL, NULL, NULL, napi_default, NULL},
    {"firstNonFinite", NULL, js_first_nonfinite, NULL, NULL, NULL, napi_default, NULL},
    {"sumUpdate", NULL, js_sum_update, NULL, NULL, NULL, napi_default, NULL},
    {"optim", NULL, js_optim, NULL, NULL, NULL, napi_default, NULL},
    {"rows", NULL, js_rows, NULL, NULL, NULL, napi_default, NULL},
    {"nonZeroRows", NULL, js_nonzero_rows, NULL, NULL, NULL, napi_default, NULL},
    {"isa", NULL, js_isa, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
