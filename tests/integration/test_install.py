# tests/integration/test_install.py -- the set-up every script does first (scripts/env.sh).
#
# Strategy: the real scripts run in a subprocess.  The interpreter choice is
# checked on scratch copies of the scripts (so no real venv is made there):
# a python3 on PATH that is too old, or one without a working venv module,
# must end in one line that names the problem.  These two stand-ins are
# small shell programs, since this machine has no old or broken Python to
# run.  The quiet re-run and the entry points use the real environment the
# suite runs in.  Making a venv from the system interpreter for real is what
# CI does on every run (.ci/run), from a clean clone.
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT


def scratch_checkout(tmp_path: Path) -> Path:
    """The scripts and package metadata, without a venv."""
    root = tmp_path / "checkout"
    (root / "scripts").mkdir(parents=True)
    for name in ("env.sh", "install.sh", "sweep", "test"):
        shutil.copy2(ROOT / "scripts" / name, root / "scripts" / name)
    for name in ("setup.py", "pyproject.toml"):
        shutil.copy2(ROOT / name, root / name)
    return root


def fake_python(folder: Path, version: str, venv_works: bool) -> None:
    """A ``python3`` that reports ``version`` and whose ``-m venv`` fails
    unless ``venv_works`` (the way Debian's does without python3-venv)."""
    folder.mkdir(exist_ok=True)
    script = folder / "python3"
    # Like the real one, a failing venv leaves a half-made folder behind.
    venv = 'exit 0' if venv_works else (
        'for a; do last=$a; done; mkdir -p "$last/bin"; '
        'echo "The virtual environment was not created successfully because ensurepip is '
        'not available." >&2; exit 1')
    script.write_text(f"""#!/bin/sh
case "$1 $2" in
  "-m venv") {venv} ;;
  "-c "*) echo "{version}" ;;
  *) exit 1 ;;
esac
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def clean_env(path: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHON", "GSERVERS_REINSTALL")}
    env.update(PATH=path, GSERVERS_NO_APT="1", **extra)
    return env


def run(argv: list[str], env: dict[str, str], cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


def test_too_old_python_is_named_in_one_line(tmp_path: Path) -> None:
    root = scratch_checkout(tmp_path)
    fake_python(tmp_path / "bin", "3.9", venv_works=True)
    result = run([str(root / "scripts" / "sweep")],
                 clean_env(f"{tmp_path / 'bin'}:/usr/bin:/bin"))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "needs Python 3.11 or newer" in lines[0] and "is 3.9" in lines[0]
    assert str(tmp_path / "bin" / "python3") in lines[0]
    assert not (root / ".venv").exists()


def test_python_without_venv_says_what_to_install(tmp_path: Path) -> None:
    root = scratch_checkout(tmp_path)
    fake_python(tmp_path / "bin", "3.11", venv_works=False)
    result = run([str(root / "scripts" / "test")], clean_env(f"{tmp_path / 'bin'}:/usr/bin:/bin"))
    assert result.returncode == 1
    assert "install: creating the project venv" in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "cannot make a virtual environment: install python3-venv" in last, result.stderr
    assert "Traceback" not in result.stderr
    assert not (root / ".venv").exists(), "a half-made venv was left behind"


def test_bad_python_variable_is_named(tmp_path: Path) -> None:
    result = run([str(ROOT / "scripts" / "sweep")],
                 clean_env(os.environ["PATH"], PYTHON=str(tmp_path / "nope")))
    assert result.returncode == 1
    assert result.stderr.strip() == f"gservers: PYTHON={tmp_path / 'nope'} is not a program"


def test_a_second_run_is_quiet_and_uses_the_active_venv() -> None:
    """With the project installed (as it is for this suite), setting up again
    prints nothing and calls no pip; the active venv is the one used."""
    env = clean_env(os.environ["PATH"], VIRTUAL_ENV=sys.prefix)
    first = run([str(ROOT / "scripts" / "install.sh")], env)
    assert first.returncode == 0, first.stderr
    again = run(["bash", "-c", '. scripts/env.sh && gs_python loadtest,test && echo "$PY"'], env)
    assert again.returncode == 0, again.stderr
    assert again.stderr == ""
    assert again.stdout.strip() == str(Path(sys.prefix) / "bin" / "python")
    stamp = (Path(sys.prefix) / "gservers-install.stamp").read_text()
    assert f"checkout={ROOT.resolve()}" in stamp


def test_the_stamp_follows_the_package_metadata(tmp_path: Path) -> None:
    """The stamp names the checkout and the package metadata it was made
    from: after either file changes, the environment is installed again."""
    root = scratch_checkout(tmp_path)
    env = clean_env(os.environ["PATH"])

    def stamp() -> list[str]:
        out = run(["bash", "-c", ". scripts/env.sh && gs_stamp_text loadtest"], env, cwd=root)
        return out.stdout.splitlines()

    first = stamp()
    assert first[0] == f"checkout={root.resolve()}" and first[2] == "extras=loadtest"
    for name in ("setup.py", "pyproject.toml"):
        with open(root / name, "a") as fh:
            fh.write("# changed\n")
        now = stamp()
        assert now[1] != first[1], f"a change to {name} leaves the stamp as it was"
        first = now


def path_without(tmp_path: Path, *hidden: str) -> str:
    """A PATH with every program of /usr/bin but ``hidden`` (/bin is /usr/bin
    here), so a job can be run as on a machine that lacks them."""
    farm = tmp_path / "usr-bin"
    farm.mkdir()
    for entry in os.scandir("/usr/bin"):
        if entry.name not in hidden:
            (farm / entry.name).symlink_to(entry.path)
    return str(farm)


def test_a_missing_required_program_is_named(tmp_path: Path) -> None:
    env = clean_env(path_without(tmp_path, "ab"), VIRTUAL_ENV=sys.prefix)
    result = run([str(ROOT / "scripts" / "sweep"), "--levels", "1"], env)
    assert result.returncode == 1
    assert result.stderr.strip() == ("gservers: ab is missing and this job needs it: install "
                                     "apache2-utils (as root: apt-get install apache2-utils)")


def test_a_missing_optional_program_says_what_is_skipped(tmp_path: Path) -> None:
    env = clean_env(path_without(tmp_path, "wrk"), VIRTUAL_ENV=sys.prefix)
    result = run(["bash", "-c", ". scripts/env.sh && gs_tools benchmark && echo ok"], env)
    assert result.returncode == 0 and result.stdout.strip() == "ok"
    assert result.stderr.strip() == ("note: wrk is missing, so the wrk rows are skipped "
                                     "(install wrk as root to run them)")
    # --help sets up no programs, so it says nothing of them.
    result = run([str(ROOT / "scripts" / "benchmark"), "--help"], env)
    assert result.returncode == 0 and "usage: scripts/benchmark" in result.stdout
    assert result.stderr == ""


@pytest.mark.parametrize("program", ["gservers-backend", "gservers-lb"])
def test_console_entry_points(program: str) -> None:
    path = Path(sys.prefix) / "bin" / program
    assert path.exists(), f"{program} is not installed in {sys.prefix}"
    result = subprocess.run([str(path), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "usage:" in result.stdout
