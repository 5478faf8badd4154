#!/bin/sh
# Builds {{name}}.wasm, with its settings beside it as {{name}}.toml. componentize-py bundles
# its own CPython, this directory's modules, the Courier SDK and msgpack's pure-Python code
# into one component. The tools are installed into .venv at the versions the SDK pins
# (COURIER_VENV names another virtual environment that has them).
set -eu
cd "$(dirname "$0")"
venv=${COURIER_VENV:-.venv}
requirements="-r sdk/guest-sdk/python/requirements-build.txt -r sdk/guest-sdk/python/requirements.txt"
if [ ! -x "$venv/bin/componentize-py" ]; then
    python3 -m venv "$venv"
    # shellcheck disable=SC2086
    "$venv/bin/pip" install --quiet --disable-pip-version-check $requirements
fi
# What the plugin imports, without native extensions (they cannot load in a component).
rm -rf .build/deps
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps --target .build/deps \
    -r sdk/guest-sdk/python/requirements.txt
find .build/deps -name '*.so' -delete
"$venv/bin/componentize-py" --wit-path sdk/wit --world plugin componentize \
    --python-path . --python-path sdk/guest-sdk/python --python-path .build/deps \
    app --output {{name}}.wasm
cp plugin.toml {{name}}.toml
echo "built {{name}}.wasm"
