#!/bin/sh
# Runs the unit tests with the project's Python (see tools.sh).
set -eu
cd "$(dirname "$0")"
. ./tools.sh
PYTHONPATH=.build/deps "$venv/bin/python" -m unittest "$@"
