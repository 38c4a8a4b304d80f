#!/usr/bin/env bash
# Installs everything shoal needs on a fresh Debian machine (idempotent; fast when already done):
# Debian's libnng (the nng transport's C library) and nng-utils (nngcat, for interop tests), the npm
# workspaces (npm ci), and the Python side (pyspark for the Spark launcher) when requirements.txt asks for it.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
SUDO=""; if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi

missing=()
# python3-torch (Debian's CPU build, ~190 MB, ~40 s): the ONNX-training tests regenerate their PyTorch fixtures
# and compare gradients live, and `npm run bench -- onnx` times PyTorch as an anchor (and gloo in the allreduce
# and cluster suites). iproute2 (ip, tc): the namespace-cluster tests and bench (bench/src/netns-cluster.ts).
for pkg in libnng-dev nng-utils python3-torch iproute2; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "[setup] apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "[setup] npm ci"
  # onnxruntime-node's install script would fetch CUDA providers; its CPU binaries ship in the tarball. npm 11
  # skips dependency install scripts unless package.json's allowScripts approves them; older npm honours this.
  ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund
fi

# pip runs when requirements.txt changed since the last successful install (a stamp beside node_modules' own).
if [ -f requirements.txt ] && [ -s requirements.txt ]; then
  stamp=node_modules/.shoal-requirements.sha256
  want=$(sha256sum requirements.txt | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "[setup] pip install -r requirements.txt"
    python3 -m pip install -q -r requirements.txt
    echo "$want" > "$stamp"
  fi
fi
echo "[setup] ok"
