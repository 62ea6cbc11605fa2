{
  "variables": {
    "//": "scripts/build-native.mjs passes these: tunnel=0 without Node's OpenSSL headers; zstd_lib/zstd_include from the zstd-napi package when it built its static library",
    "tunnel%": 1,
    "zstd_lib%": "",
    "zstd_include%": ""
  },
  "targets": [
    {
      "target_name": "zipline_pump",
      "sources": ["native/pump/pump.c", "native/pump/udp.c", "native/pump/accept.c", "native/pump/body.c", "native/pump/send.c", "native/pump/sockerr.c", "native/common/deferred.c"],
      "cflags": ["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "conditions": [["OS!='linux'", { "type": "none", "sources!": ["native/pump/pump.c", "native/pump/udp.c", "native/pump/accept.c", "native/pump/body.c", "native/pump/send.c", "native/pump/sockerr.c", "native/common/deferred.c"] }]]
    },
    {
      "target_name": "zipline_shm",
      "sources": ["native/addon/shm_addon.c", "native/lib/zipline_shm.c"],
      "include_dirs": ["native/include"],
      "cflags": ["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "conditions": [["OS!='linux'", { "type": "none", "sources!": ["native/addon/shm_addon.c", "native/lib/zipline_shm.c"] }]]
    },
    {
      "target_name": "zipline_proc",
      "sources": ["native/proc/exec.c", "native/proc/systemd.c"],
      "cflags": ["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "conditions": [["OS!='linux'", { "type": "none", "sources!": ["native/proc/exec.c", "native/proc/systemd.c"] }]]
    },
    {
      "target_name": "zipline_crc",
      "sources": ["native/crc/crc32_core.c", "native/crc/crc32_addon.c"],
      "cflags": ["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "conditions": [["OS!='linux'", { "type": "none", "sources!": ["native/crc/crc32_core.c", "native/crc/crc32_addon.c"] }]]
    },
    {
      "target_name": "zipline_tunnel",
      "sources": ["native/tunnel/loop.c", "native/tunnel/session.c", "native/tunnel/stream.c", "native/tunnel/lane.c", "native/tunnel/tls.c", "native/tunnel/codec.c", "native/crc/crc32_core.c", "native/common/deferred.c"],
      "cflags": ["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "conditions": [
        ["OS!='linux' or tunnel==0", { "type": "none", "sources!": ["native/tunnel/loop.c", "native/tunnel/session.c", "native/tunnel/stream.c", "native/tunnel/lane.c", "native/tunnel/tls.c", "native/tunnel/codec.c", "native/crc/crc32_core.c", "native/common/deferred.c"] }],
        ["zstd_lib!=''", { "defines": ["ZIPLINE_ZSTD"], "include_dirs": ["<(zstd_include)"], "libraries": ["<(zstd_lib)"] }]
      ]
    }
  ]
}
