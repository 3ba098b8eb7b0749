#!/usr/bin/env bash
# Installs Debian's Chromium, which the console's browser tests drive headless (chromedp over the
# DevTools protocol; no ChromeDriver needed). Idempotent: nothing is called when it is installed.
# fonts-dejavu-core gives the screenshots real glyphs: headless Chromium draws no text without a font.
set -euo pipefail

# shellcheck source=lib/apt.sh
source "$(dirname "$0")/lib/apt.sh"
apt_install_missing install-browser chromium fonts-dejavu-core
