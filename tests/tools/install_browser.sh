#!/usr/bin/env bash
# Install what tests/test_browser.py needs: Debian's Chromium and ChromeDriver
# (/usr/bin/chromium, /usr/bin/chromedriver) and Selenium in the given Python.
# Idempotent: installs only what is missing. Needs root (or sudo) for apt-get.
# Usage: tests/tools/install_browser.sh PYTHON   (e.g. .venv/bin/python)
set -euo pipefail
PY=${1:-python}
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends \
    chromium chromium-driver
fi
if ! "$PY" -c "import selenium" 2>/dev/null; then
  # Selenium 4 drives the Debian chromedriver given by path (its Selenium Manager is never needed).
  "$PY" -m pip install -q "selenium>=4.10,<5" 2>&1 | grep -v "^WARNING: Location" || true
fi
"$PY" -c "import selenium; print('selenium', selenium.__version__)"
chromium --version
chromedriver --version
