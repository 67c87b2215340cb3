#!/usr/bin/env bash
# The main job: install, start the local Kafka and PostgreSQL, run cartstream,
# send the sample Shopify webhooks and print the customers and segment changes.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/cartstream demo "$@"
