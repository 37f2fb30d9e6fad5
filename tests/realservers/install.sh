#!/usr/bin/env bash
# Installs the real servers the test suite starts (run by `make test`; idempotent).
# Only Debian packages that are missing are installed; Python-side servers come from
# the test extra in pyproject.toml.
set -euo pipefail

# Extra Debian packages may be named as arguments (make bench asks for wrk).
need=("$@")
if ! command -v initdb >/dev/null && ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  need+=(postgresql)
fi

# Headless Chromium for the web UI's browser tests (driven by the playwright package),
# and a CJK font so that its screenshots of the zh-CN pages show text, not boxes.
if ! command -v chromium >/dev/null; then
  need+=(chromium)
fi
if [ ! -e /usr/share/fonts/truetype/wqy/wqy-zenhei.ttc ]; then
  need+=(fonts-wqy-zenhei)
fi

# Bubblewrap, the sandbox department code runs in (the sandbox runtime's tests and
# package inspection); setpriv and prlimit come with util-linux.
if ! command -v bwrap >/dev/null; then
  need+=(bubblewrap)
fi

if ((${#need[@]})); then
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  echo "installing test servers from Debian: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
