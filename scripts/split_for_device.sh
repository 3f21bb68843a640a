#!/usr/bin/env bash
# Splits a file (a real model) into 33 MiB parts under device/parts/NAME/ so it can reach the GPU machine, whose
# calls carry at most 64 MiB each (the repository itself takes about 28 MiB of that). Send one part per call,
# back to back (the machine forgets /root after 30 idle seconds), each call copying its part to /root/m; the
# last call joins them:
#   cat /root/m/NAME.part* > /root/m/NAME && sha256sum /root/m/NAME
# The printed sha256 is the original's, to compare.
set -euo pipefail
f="${1:?usage: $0 FILE}"
cd "$(dirname "$0")/.."
name=$(basename "$f")
rm -rf "device/parts/$name"
mkdir -p "device/parts/$name"
split -b 33M -d "$f" "device/parts/$name/$name.part"
ls -la "device/parts/$name" >&2
sha256sum "$f"
