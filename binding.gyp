{
  "targets": [
    {
      "target_name": "zipline_pump",
      "sources": ["native/pump/pump.c", "native/pump/udp.c", "native/pump/accept.c", "native/pump/body.c"],
      "cflags": ["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "conditions": [["OS!='linux'", { "type": "none", "sources!": ["native/pump/pump.c", "native/pump/udp.c", "native/pump/accept.c", "native/pump/body.c"] }]]
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
      "sources": ["native/proc/exec.c"],
      "cflags": ["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "conditions": [["OS!='linux'", { "type": "none", "sources!": ["native/proc/exec.c"] }]]
    },
    {
      "target_name": "zipline_crc",
      "sources": ["native/crc/crc32_core.c", "native/crc/crc32_addon.c"],
      "cflags": ["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "conditions": [["OS!='linux'", { "type": "none", "sources!": ["native/crc/crc32_core.c", "native/crc/crc32_addon.c"] }]]
    }
  ]
}
