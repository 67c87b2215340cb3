#!/usr/bin/env bash
# Creates .venv with Python 3.11+ and installs cartstream with its test tools.
# Safe to run again: pip skips what is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "cartstream needs Python 3.11 or newer; set PYTHON to one" >&2
  exit 1
fi
for tool in java mvn; do
  command -v "$tool" >/dev/null || { echo "cartstream's local Kafka needs $tool (Java 17+, Maven 3.8+)" >&2; exit 1; }
done

if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test]"
