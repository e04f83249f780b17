#!/usr/bin/env bash
# System tools the test suite needs beyond Python packages (none yet; the browser test adds Chromium).
set -euo pipefail
