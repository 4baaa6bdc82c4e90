#!/usr/bin/env bash
# Installs Debian's headless-capable Chromium (and its WebDriver), which the report's browser test
# (tests/report/test_report_browser.py) and the report screenshot in docs/ use. Idempotent: does
# nothing when /usr/bin/chromium is there. Without root or apt-get it says how to install it and
# exits 0, so that a dev set-up never fails over it (the browser test then skips).
set -euo pipefail
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}

if [ -x "$CHROMIUM" ]; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "install-chromium: apt-get install chromium chromium-driver" >&2
  export DEBIAN_FRONTEND=noninteractive
  (apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q chromium chromium-driver >/dev/null; })
  "$CHROMIUM" --version >&2
else
  echo "install-chromium: $CHROMIUM is missing and this is not root (or has no apt-get):" >&2
  echo "       run 'sudo apt-get install chromium chromium-driver' to enable the browser test" >&2
  echo "       of the report (tests/report/test_report_browser.py skips without it)" >&2
fi
