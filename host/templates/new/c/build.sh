#!/bin/sh
# Builds {{name}}.wasm: clang compiles the handler and the Courier SDK into a WASI preview 1
# core module; `courier component new` embeds the Courier contract into it and adapts it to
# WASI 0.2, which makes it a component. Needs clang 16 or later with a wasm32-wasi sysroot
# (CLANG or COURIER_CLANG names it; by default clang-16, else clang) and the `courier` command
# (COURIER names it; by default the one on PATH).
set -eu
cd "$(dirname "$0")"
if [ -n "${CLANG:-${COURIER_CLANG:-}}" ]; then
    clang=${CLANG:-$COURIER_CLANG}
elif command -v clang-16 >/dev/null 2>&1; then
    clang=clang-16
else
    clang=clang
fi
courier=${COURIER:-courier}
if ! command -v "$clang" >/dev/null 2>&1; then
    echo "error: $clang not found: install clang 16 or later with a wasm32-wasi sysroot" >&2
    echo "  (Debian: apt-get install clang-16 lld-16 wasi-libc libclang-rt-16-dev-wasm32)," >&2
    echo "  or set CLANG to one" >&2
    exit 1
fi
if ! command -v "$courier" >/dev/null 2>&1; then
    echo "error: $courier not found: put courier on PATH, or set COURIER to it" >&2
    exit 1
fi
mkdir -p .build
# Every .c file here but the unit tests.
sources=""
for file in ./*.c; do
    case "$file" in
    ./test_*) ;;
    *) sources="$sources $file" ;;
    esac
done
# shellcheck disable=SC2086
"$clang" --target=wasm32-wasi -mexec-model=reactor -std=c11 -O2 \
    -Wall -Wextra -Werror -Wno-unused-parameter -s \
    -I sdk/guest-sdk/c/include -I sdk/guest-sdk/c/bindings \
    sdk/guest-sdk/c/src/*.c sdk/guest-sdk/c/bindings/plugin.c $sources \
    -o .build/{{name}}.core.wasm
"$courier" component new .build/{{name}}.core.wasm -o {{name}}.wasm
echo "built {{name}}.wasm"
