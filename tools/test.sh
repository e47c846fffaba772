#!/usr/bin/env bash
# Install (if needed) and run the test suite.
#
#   bash tools/test.sh               # the fast suite (what CI runs)
#   bash tools/test.sh -m slow       # the long tests
#   bash tools/test.sh tests/features -k fbank    # any pytest arguments
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash tools/install.sh
if [ -n "${VIRTUAL_ENV:-}" ]; then py="$VIRTUAL_ENV/bin/python"; else py="$root/.venv/bin/python"; fi
# Two workers match the 2-core machines we test on; -p no:cacheprovider keeps a clean tree;
# -rs ends the summary with every skipped test and why (slow: select with -m slow; no CUDA
# device; an optional package missing).
paths=(tests)
for a in "$@"; do case "$a" in tests*|./tests*) paths=() ;; esac; done
exec "$py" -m pytest -n "${SPEECHSSL_TEST_WORKERS:-2}" --dist loadgroup -p no:cacheprovider -rs "$@" "${paths[@]}"
