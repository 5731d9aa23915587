#!/usr/bin/env bash
# Set up this checkout without running anything: the project venv (or the
# interpreter chosen by $PYTHON / $VIRTUAL_ENV) with every extra, and the
# system programs of the given jobs.  scripts/install.sh [sweep|test|benchmark...]
# (default: test).  The jobs' own scripts call the same steps themselves.
set -euo pipefail
. "$(dirname "$0")/env.sh"
gs_python loadtest,test
for job in "${@:-test}"; do gs_tools "$job"; done
