# Sourced by build.sh and test.sh: the virtual environment with the tools at the versions the
# SDK pins (.venv, made on first use; COURIER_VENV names another that has them), and what the
# plugin imports, without native extensions (they cannot load in a component), in .build/deps.
# Both are made again only when the SDK's requirements change.
venv=${COURIER_VENV:-.venv}
sdk=sdk/guest-sdk/python
if [ ! -x "$venv/bin/componentize-py" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        -r "$sdk/requirements-build.txt" -r "$sdk/requirements.txt"
fi
if ! cmp -s "$sdk/requirements.txt" .build/deps.stamp; then
    rm -rf .build/deps
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps --target .build/deps \
        -r "$sdk/requirements.txt"
    find .build/deps -name '*.so' -delete
    cp "$sdk/requirements.txt" .build/deps.stamp
fi
