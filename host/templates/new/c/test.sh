#!/bin/sh
# Builds the unit test for this machine (CC names the compiler, cc by default) and runs it.
set -eu
cd "$(dirname "$0")"
mkdir -p .build
${CC:-cc} -std=c11 -Wall -Wextra -Werror -o .build/test_greeting greeting.c test_greeting.c
.build/test_greeting
