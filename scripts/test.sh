#!/usr/bin/env bash
# Installs cartstream and runs the whole test suite. The tests start their own
# Kafka broker and PostgreSQL server on loopback and stop them at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
