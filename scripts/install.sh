#!/usr/bin/env bash
# Install what gservers needs on a fresh machine: the Python package with its
# test extras (pip), and ApacheBench (Debian's apache2-utils) when it is
# missing and we are root.  Safe to run again; quiet when all is there.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if ! "$PYTHON" -c "import gservers, gevent, httptools, locust, matplotlib, pytest, hypothesis" 2>/dev/null \
   || [ "${GSERVERS_REINSTALL:-0}" = 1 ]; then
  echo "install: pip install -e '.[test]'"
  "$PYTHON" -m pip install --quiet --disable-pip-version-check -e '.[test]'
fi

if ! command -v ab >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "install: apt-get install apache2-utils (ApacheBench)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq apache2-utils >/dev/null
  else
    echo "install: ApacheBench (ab) is missing: install apache2-utils (needs root)" >&2
    exit 1
  fi
fi
