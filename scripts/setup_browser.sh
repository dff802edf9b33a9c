#!/usr/bin/env bash
# Installs what the browser demo and tests/test_web_demo.py need:
#   - the node packages of examples/web (LiteRT.js @litertjs/core with its
#     wasm runtime, playwright-core), with `npm ci` from package-lock.json;
#   - a Chromium: Debian's `chromium` (apt-get, as root), unless one is
#     found ($CHROMIUM_PATH, chromium, chromium-browser, google-chrome);
#   - node and npm themselves (Debian's nodejs, npm) where missing.
# Idempotent and quick when everything is there. Where an install is not
# possible (not root, no apt-get or npm registry) it says why and exits 0:
# the web demo test then skips, printing the reason.
set -uo pipefail
cd "$(dirname "$0")/.."
web=examples/web
say() { echo "setup_browser: $*"; }
apt_updated=0
apt_install() {
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    say "cannot install $* (needs root and apt-get)"
    return 1
  fi
  if [ "$apt_updated" = 0 ]; then
    apt-get update -qq >/dev/null || { say "apt-get update failed"; return 1; }
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null \
    || { say "apt-get install $* failed"; return 1; }
}

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  apt_install nodejs npm || { say "no node/npm: the web demo test will skip"; exit 0; }
fi

stamp="$web/node_modules/.keras-l0-lock.sha256"
lock_sum="$(sha256sum "$web/package-lock.json" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$lock_sum" ] \
  || [ ! -f "$web/node_modules/@litertjs/core/package.json" ] \
  || [ ! -f "$web/node_modules/playwright-core/package.json" ]; then
  if (cd "$web" && npm ci --no-audit --no-fund --loglevel=error); then
    echo "$lock_sum" > "$stamp"
    say "npm ci in $web: done"
  else
    say "npm ci in $web failed: the web demo test will skip"
    exit 0
  fi
fi

chromium=""
if [ -n "${CHROMIUM_PATH:-}" ] && [ -x "$CHROMIUM_PATH" ]; then
  chromium="$CHROMIUM_PATH"
else
  for name in chromium chromium-browser google-chrome; do
    if command -v "$name" >/dev/null; then chromium="$(command -v "$name")"; break; fi
  done
fi
if [ -z "$chromium" ]; then
  if apt_install chromium fonts-dejavu-core; then
    chromium="$(command -v chromium)"
  else
    say "no Chromium: the web demo test will skip"
    exit 0
  fi
fi
say "ready: node $(node --version), $("$chromium" --version 2>/dev/null | head -1)"
