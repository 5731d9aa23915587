# scripts/env.sh -- sourced by every script: the Python that runs the project,
# and the system programs a job needs.  Never run directly.
#
#   gs_python EXTRAS     sets PY to the interpreter that runs the project and
#                        makes sure this checkout is installed in it (editable)
#                        with EXTRAS ("loadtest" or "loadtest,test").
#   gs_tools PROFILE     makes sure the programs PROFILE needs are there
#                        (sweep, test, benchmark, screenshot); see gs_tools below.
#
# Which interpreter: $PYTHON when set; else the virtual environment the user
# activated ($VIRTUAL_ENV); else the project's own venv, .venv/ in the
# checkout, made with the stdlib venv from the python3 on PATH.  The system
# interpreter is never written to: on Debian and Ubuntu it is marked
# externally managed (PEP 668) and pip refuses it.  A stamp in the
# environment records what was installed from where, so a run with everything
# in place calls no pip.  GSERVERS_REINSTALL=1 forces a reinstall;
# GSERVERS_NO_APT=1 never runs apt-get.

# Sourced without arguments, $* is the calling script's: --help sets up no tools.
case " ${*:-} " in *" -h "*|*" --help "*) GS_HELP=1 ;; esac
GS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
GS_MIN_PYTHON=3.11

gs_say() { printf '%s\n' "$*" >&2; }
gs_die() { gs_say "$*"; exit 1; }
# gs_root: whether apt-get may be used (root, apt-get there, GSERVERS_NO_APT unset).
gs_root() {
  [ "${GSERVERS_NO_APT:-0}" != 1 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1
}

GS_APT_UPDATED=0
# gs_apt PACKAGE...: apt-get install as root, after one apt-get update per run.
gs_apt() {
  if [ "$GS_APT_UPDATED" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 || true
    GS_APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" \
    </dev/null >/dev/null 2>&1
}

# gs_version PY: "3.11" for that interpreter, or nothing when it does not run.
gs_version() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null; }

# gs_check_version PY VERSION: exit with one line unless VERSION >= 3.11.
gs_check_version() {
  local major=${2%%.*} minor=${2#*.}
  if [ -z "$2" ] || [ "$major" -lt 3 ] || { [ "$major" = 3 ] && [ "$minor" -lt 11 ]; }; then
    gs_die "gservers needs Python $GS_MIN_PYTHON or newer; $1 is ${2:-not a working Python}" \
           "(put a newer python3 first on PATH, or set PYTHON=/path/to/python3.11+)"
  fi
}

# gs_make_venv DIR: the project venv, from the python3 on PATH.
gs_make_venv() {
  local dir=$1 base version
  base=$(command -v python3) || gs_die "gservers: no python3 on PATH; install Python $GS_MIN_PYTHON+"
  version=$(gs_version "$base")
  gs_check_version "$base" "$version"
  gs_say "install: creating the project venv $dir (from $base, Python $version)"
  if ! "$base" -m venv --clear "$dir" >/dev/null 2>&1; then
    # Debian and Ubuntu ship venv's pip bootstrap apart, as python3-venv.
    if gs_root; then
      gs_say "install: apt-get install python3-venv python$version-venv"
      gs_apt python3-venv "python$version-venv" || gs_apt python3-venv || true
    fi
    rm -rf "$dir"
    "$base" -m venv "$dir" >/dev/null 2>&1 || { rm -rf "$dir"; gs_die \
      "gservers: $base cannot make a virtual environment: install python3-venv" \
      "(apt-get install python3-venv python$version-venv) and run this again"; }
  fi
}

# gs_python EXTRAS: set PY (see the top of this file).
gs_python() {
  local extras=$1 venv="$GS_ROOT/.venv"
  if [ -n "${PYTHON:-}" ]; then
    PY=$(command -v "$PYTHON") || gs_die "gservers: PYTHON=$PYTHON is not a program"
  elif [ -n "${VIRTUAL_ENV:-}" ] && [ -x "$VIRTUAL_ENV/bin/python" ]; then
    PY="$VIRTUAL_ENV/bin/python"
  else
    # A venv that no longer runs (its base Python was removed) is made anew.
    if ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
      gs_make_venv "$venv"
    fi
    PY="$venv/bin/python"
  fi
  gs_check_version "$PY" "$(gs_version "$PY")"
  export PYTHON=$PY  # what the tests and tools start their children with
  gs_install "$extras"
}

# The stamp: the checkout, the hash of its package metadata, the extras.
gs_stamp_text() {
  printf 'checkout=%s\nsetup=%s\nextras=%s\n' "$GS_ROOT" \
    "$(cat "$GS_ROOT/setup.py" "$GS_ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)" "$1"
}

# gs_install EXTRAS: pip install -e ".[EXTRAS]" into PY unless the stamp says
# this checkout is already installed there with those extras (or more).
gs_install() {
  local want=$1 stamp have extra needed=0 all
  stamp="$("$PY" -c 'import sys; print(sys.prefix)')/gservers-install.stamp"
  if [ "${GSERVERS_REINSTALL:-0}" != 1 ] && [ -f "$stamp" ] \
     && [ "$(head -n 2 "$stamp")" = "$(gs_stamp_text "" | head -n 2)" ] \
     && "$PY" -c 'import gservers' 2>/dev/null; then
    have=$(sed -n 's/^extras=//p' "$stamp")
    for extra in ${want//,/ }; do
      case ",$have," in *",$extra,"*) ;; *) needed=1 ;; esac
    done
    [ "$needed" = 0 ] && return 0
    all="$have,$want"
  else
    all=$want
  fi
  all=$(printf '%s\n' ${all//,/ } | sort -u | paste -sd, -)
  local spec=$GS_ROOT
  [ -z "$all" ] || spec="$GS_ROOT[$all]"
  gs_say "install: pip install -e '.${all:+[$all]}' into $("$PY" -c 'import sys; print(sys.prefix)')"
  "$PY" -m pip install --quiet --disable-pip-version-check -e "$spec" \
    || gs_die "gservers: pip could not install the project into $PY (see above)"
  gs_stamp_text "$all" >"$stamp" 2>/dev/null \
    || gs_say "install: could not write $stamp; the next run will check again"
}

# gs_find CMD: the program's path, also in the sbin folders a user's PATH lacks.
gs_find() {
  command -v "$1" 2>/dev/null && return 0
  local dir
  for dir in /usr/sbin /sbin /usr/local/sbin; do
    [ -x "$dir/$1" ] && { printf '%s\n' "$dir/$1"; return 0; }
  done
  return 1
}

# gs_tools PROFILE: the system programs of a job, from Debian's packages.
# Each row: command, packages (the first that installs wins), "required" or
# what is skipped without it.  Missing ones are installed with one apt-get
# update, only as root; otherwise one line says what is skipped.
gs_tools() {
  local rows=() row cmd pkgs why missing=() pkg
  [ "${GS_HELP:-0}" = 0 ] || return 0  # --help installs nothing
  case $1 in
    sweep) rows=("ab|apache2-utils|required"
                 "haproxy|haproxy|the Asynchronous+haproxy row is skipped"
                 "nginx|nginx-light nginx|the Asynchronous+nginx row is skipped") ;;
    test) rows=("ab|apache2-utils|required"
                "ip|iproute2|the network-namespace tests are skipped"
                "haproxy|haproxy|the haproxy config test is skipped"
                "nginx|nginx-light nginx|the nginx config test is skipped"
                "chromium|chromium|the status page browser test is skipped"
                "chromedriver|chromium-driver|the status page browser test is skipped") ;;
    screenshot) rows=("chromium|chromium|required"
                      "chromedriver|chromium-driver|required") ;;
    benchmark) rows=("ab|apache2-utils|required"
                     "haproxy|haproxy|the haproxy rows are skipped"
                     "nginx|nginx-light nginx|the nginx rows are skipped"
                     "wrk|wrk|the wrk rows are skipped") ;;
    *) gs_die "gs_tools: no profile '$1'" ;;
  esac
  for row in "${rows[@]}"; do
    IFS='|' read -r cmd pkgs why <<<"$row"
    gs_find "$cmd" >/dev/null || missing+=("$row")
  done
  [ ${#missing[@]} -gt 0 ] || return 0
  if gs_root; then
    local first=()
    for row in "${missing[@]}"; do
      IFS='|' read -r cmd pkgs why <<<"$row"
      first+=("${pkgs%% *}")
    done
    gs_say "install: apt-get install ${first[*]}"
    if ! gs_apt "${first[@]}"; then  # one by one, with the fallbacks
      for row in "${missing[@]}"; do
        IFS='|' read -r cmd pkgs why <<<"$row"
        for pkg in $pkgs; do gs_apt "$pkg" && break; done
      done
    fi
  fi
  for row in "${missing[@]}"; do
    IFS='|' read -r cmd pkgs why <<<"$row"
    gs_find "$cmd" >/dev/null && continue
    pkg=${pkgs%% *}
    if [ "$why" = required ]; then
      gs_die "gservers: $cmd is missing and this job needs it: install $pkg" \
             "(as root: apt-get install $pkg)"
    fi
    gs_say "note: $cmd is missing, so $why (install $pkg as root to run them)"
  done
}
