{
  "targets": [
    {
      "target_name": "shoal_shmcoll",
      "sources": ["src/collective.cc", "src/pipeline.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "../include"],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_CPP_EXCEPTIONS"],
      "cflags_cc": ["-std=c++17", "-O3", "-fno-exceptions", "-fno-strict-aliasing"],
      "cflags_cc!": ["-fno-rtti", "-O2"],
      "libraries": ["-lrt", "-lpthread", "-Wl,-z,nodelete"]
    }
  ]
}
