{
  "targets": [
    {
      "target_name": "zipline_pump",
      "sources": ["native/pump/pump.c", "native/pump/udp.c", "native/pump/accept.c", "native/pump/body.c"],
      "cflags": ["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "conditions": [["OS!='linux'", { "type": "none", "sources!": ["native/pump/pump.c", "native/pump/udp.c", "native/pump/accept.c", "native/pump/body.c"] }]]
    }
  ]
}
