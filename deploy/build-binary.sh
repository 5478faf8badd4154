#!/usr/bin/env bash
# Builds the release `courier` binary: the one way it is built, by the container image's build
# stage (deploy/Dockerfile) and by CI, so CI proves the image's build step works.
# Prints the path of the binary on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -j"${COURIER_BUILD_JOBS:-2}" -p courier-host --bin courier
echo "$(pwd)/target/release/courier"
