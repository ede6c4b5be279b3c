#!/usr/bin/env bash
# Install Debian's Chromium for the HTML report browser test (tests/test_report_browser.py).
# Prints the browser's path on success; exits 1 with a reason when it cannot be installed here.
set -euo pipefail
for name in chromium chromium-browser; do
  if command -v "$name" >/dev/null 2>&1; then command -v "$name"; exit 0; fi
done
if ! command -v apt-get >/dev/null 2>&1; then
  echo "no apt-get on this machine: install Chromium by hand to run the browser test" >&2; exit 1
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
  if sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "not root and no passwordless sudo: cannot apt-get install chromium" >&2; exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
command -v chromium
