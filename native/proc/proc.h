/* The zipline_proc addon's functions defined outside exec.c (registered in its module init). */
#ifndef ZIPLINE_PROC_H
#define ZIPLINE_PROC_H
#include <node_api.h>

napi_value zl_proc_notify(napi_env env, napi_callback_info info);
napi_value zl_proc_sockinfo(napi_env env, napi_callback_info info);

#endif
