#!/usr/bin/env bash
# Install KeyFace Live with its test extras and run the whole test suite.
# torch is pinned here (not in pyproject) so CI gets the small CPU build.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-system-deps.sh
python3 -m pip install -q "torch==2.13.0" -e ".[dev]"
python3 -m pytest -q "$@"
