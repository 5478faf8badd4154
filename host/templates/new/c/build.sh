#!/bin/sh
# Builds {{name}}.wasm: clang compiles the handler and the Courier SDK into a WASI preview 1
# core module; `courier component new` embeds the Courier contract into it and adapts it to
# WASI 0.2, which makes it a component. Needs clang 16 or later with a wasm32-wasi sysroot
# (Debian: clang-16 lld-16 wasi-libc libclang-rt-16-dev-wasm32; CLANG names another) and the
# `courier` command (COURIER names another).
set -eu
cd "$(dirname "$0")"
clang=${CLANG:-clang-16}
courier=${COURIER:-courier}
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
