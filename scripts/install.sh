#!/usr/bin/env bash
# Install what gservers needs on a fresh machine: the Python package with its
# test extras (pip), and ApacheBench (Debian's apache2-utils) when it is
# missing and we are root.  Safe to run again; quiet when all is there.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

# Install (editable) when anything is missing, or when the gservers Python
# would import is another checkout's.
here=$(pwd -P)
where=$("$PYTHON" -c "import gservers, gevent, httptools, locust, matplotlib, pytest, hypothesis, os
print(os.path.dirname(os.path.dirname(os.path.realpath(gservers.__file__))))" 2>/dev/null || true)
if [ "$where" != "$here" ] || [ "${GSERVERS_REINSTALL:-0}" = 1 ]; then
  echo "install: pip install -e '.[test]'"
  "$PYTHON" -m pip install --quiet --disable-pip-version-check -e '.[test]'
fi

# Debian packages: ApacheBench (needed), iproute2 (the network-namespace tests
# skip without it).
missing=()
command -v ab >/dev/null 2>&1 || missing+=(apache2-utils)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "install: apt-get install ${missing[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  elif ! command -v ab >/dev/null 2>&1; then
    echo "install: ApacheBench (ab) is missing: install apache2-utils (needs root)" >&2
    exit 1
  fi
fi
