/* The CRC addon: zl_crc32 (crc32_core.c) for JavaScript (src/tunnel/crc.ts). */
#include <node_api.h>
#include <stddef.h>
#include <stdint.h>

#include "crc32.h"

/* crc32(view: Uint8Array): number */
static napi_value js_crc32(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], out;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  napi_typedarray_type type;
  size_t length = 0, offset = 0;
  void *data = NULL;
  napi_value ab;
  if (argc < 1 || napi_get_typedarray_info(env, argv[0], &type, &length, &data, &ab, &offset) != napi_ok ||
      type != napi_uint8_array) {
    napi_throw_type_error(env, NULL, "crc32 expects a Uint8Array");
    return NULL;
  }
  napi_create_uint32(env, zl_crc32((const uint8_t *)data, length), &out);
  return out;
}

NAPI_MODULE_INIT(/* napi_env env, napi_value exports */) {
  int accelerated = zl_crc32_init();
  napi_value fn, accel;
  napi_create_function(env, "crc32", NAPI_AUTO_LENGTH, js_crc32, NULL, &fn);
  napi_set_named_property(env, exports, "crc32", fn);
  napi_get_boolean(env, accelerated, &accel);
  napi_set_named_property(env, exports, "accelerated", accel);
  return exports;
}
