#!/bin/sh
# Builds {{name}}.wasm, with its settings beside it as {{name}}.toml. componentize-py bundles
# its own CPython, the modules of src/, the Courier SDK and msgpack's pure-Python code into one
# component.
set -eu
cd "$(dirname "$0")"
. ./tools.sh
"$venv/bin/componentize-py" --wit-path sdk/wit --world plugin componentize \
    --python-path src --python-path "$sdk" --python-path .build/deps \
    app --output {{name}}.wasm
cp plugin.toml {{name}}.toml
echo "built {{name}}.wasm"
