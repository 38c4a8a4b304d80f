{
  "targets": [
    {
      "target_name": "shoal_kernels",
      "sources": ["src/addon.c", "src/reduce.c", "src/half.c", "src/update.c", "src/rows.c"],
      "include_dirs": ["../include"],
      "cflags": ["-O3", "-std=c11", "-fno-strict-aliasing", "-ffp-contract=off", "-fno-math-errno"],
      "cflags!": ["-O2"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
