#!/usr/bin/env bash
# The end-to-end suite: `hearth serve` on free loopback ports, driven by the official openai and anthropic
# Python SDKs (tests/e2e). Needs python3 (with venv and pip) and a Rust toolchain.
#
#   scripts/e2e.sh                 build hearth, fetch the models, run every test
#   scripts/e2e.sh -k anthropic    arguments go to pytest
#   HEARTH_BIN=path scripts/e2e.sh use that binary instead of building target/release/hearth
#
# Idempotent: the virtual environment (target/e2e-venv) is made once and reinstalled only when
# scripts/requirements-e2e.txt changes; models already fetched are kept; cargo rebuilds only what changed.
# The exit status is pytest's.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

venv="$root/target/e2e-venv"
req="$root/scripts/requirements-e2e.txt"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if ! cmp -s "$req" "$venv/.requirements-e2e.txt"; then
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
  cp "$req" "$venv/.requirements-e2e.txt"
fi

if [ -z "${HEARTH_BIN:-}" ]; then
  cargo build --release -p hearth
  HEARTH_BIN="$root/target/release/hearth"
fi
HEARTH_MODELS_DIR=$(scripts/fetch_models.sh)
export HEARTH_BIN HEARTH_MODELS_DIR

set +e
"$venv/bin/python" -m pytest -q tests/e2e "$@"
status=$?
set -e
exit $status
