#!/usr/bin/env bash
# Installs everything shoal needs on a fresh Debian machine (idempotent; fast when already done):
# Debian's libnng (the nng transport's C library) and nng-utils (nngcat, for interop tests), the npm
# workspaces (npm ci), and the Python side (pyspark for the Spark launcher) when requirements.txt asks for it.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
SUDO=""; if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi

missing=()
for pkg in libnng-dev nng-utils; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "[setup] apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "[setup] npm ci"
  npm ci --no-audit --no-fund
fi

if [ -f requirements.txt ] && [ -s requirements.txt ]; then
  if ! python3 -c "import pyspark, pyarrow, pandas, pytest, tensorboard" >/dev/null 2>&1; then
    echo "[setup] pip install -r requirements.txt"
    python3 -m pip install -q -r requirements.txt
  fi
fi
echo "[setup] ok"
