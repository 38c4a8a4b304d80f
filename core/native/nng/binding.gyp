{
  "targets": [
    {
      "target_name": "shoal_nng",
      "sources": ["src/addon.cc", "src/connect.cc", "src/rx.cc", "src/tx.cc", "src/close.cc", "src/jsrx.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-O2", "-Wall", "-Wextra"],
      "libraries": ["-lnng", "-Wl,-z,nodelete"]
    }
  ]
}
