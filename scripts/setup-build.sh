#!/usr/bin/env bash
# Installs the build tools LightGBM needs (the `lightgbm3` crate builds LightGBM from its C++
# sources with CMake >= 3.28 and generates its bindings with libclang) into target/build-tools,
# from the Python package index (packages `cmake` and `libclang`), so no system package and no
# root is needed. .cargo/config.toml points cargo at them (CMAKE, LIBCLANG_PATH) and at the C
# compiler's own headers (CPLUS_INCLUDE_PATH: the libclang wheel ships no stddef.h). Idempotent:
# a second run only checks.
#
#   scripts/setup-build.sh && cargo build
set -euo pipefail
cd "$(dirname "$0")/.."
tools=target/build-tools
py=${PYTHON:-python3}
if [ ! -x "$tools/venv/bin/python" ]; then
  mkdir -p "$tools"
  "$py" -m venv "$tools/venv" >&2
fi
vpy="$tools/venv/bin/python"
if ! "$vpy" -c 'import cmake, clang' 2>/dev/null; then
  "$vpy" -m pip install -q --disable-pip-version-check cmake==4.4.5 libclang==18.1.1 >&2
fi
mkdir -p "$tools/bin" "$tools/lib"
ln -sfr "$tools/venv/bin/cmake" "$tools/bin/cmake"
native=$("$vpy" -c 'import clang, pathlib; print(pathlib.Path(clang.__file__).parent / "native")')
ln -sfr "$native/libclang.so" "$tools/lib/libclang.so"
ln -sfn "$(cc -print-file-name=include)" "$tools/cc-include"
"$tools/bin/cmake" --version | head -1 >&2
[ -e "$tools/lib/libclang.so" ] || { echo "error: libclang.so missing under $native" >&2; exit 1; }
