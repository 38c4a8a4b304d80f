{
  "targets": [
    {
      "target_name": "shoal_shm",
      "sources": ["src/segment.cc", "src/segment-io.cc", "src/region.cc", "src/ring.cc", "src/wake.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_CPP_EXCEPTIONS"],
      "cflags_cc": ["-std=c++17", "-O3", "-fno-exceptions"],
      "cflags_cc!": ["-fno-rtti"],
      "libraries": ["-lrt", "-lpthread", "-Wl,-z,nodelete"]
    }
  ]
}
