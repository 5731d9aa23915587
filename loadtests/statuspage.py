# loadtests/statuspage.py -- the balancer's status page in headless Chromium:
# the browser its test drives, and the screenshot in docs/.
#
# Strategy: Debian's chromium and chromium-driver, driven by Selenium through
# /usr/bin/chromedriver named outright (so Selenium Manager never looks for,
# let alone downloads, a driver), with the flags a closed network run as
# root needs: no sandbox, no GPU, nothing fetched in the background, a fresh
# profile in a temporary folder removed afterwards.  Selenium is imported
# only when a browser is started, so this module loads without it.
# ``python -m loadtests.statuspage`` (scripts/status_screenshot) starts four
# backends and a two-worker balancer through their real command lines with
# the supervisor, sends a few hundred requests, drains one backend and puts
# another in maintenance through the admin API, and saves a PNG of the page.
from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from loadtests.supervisor import HOST, Balancer, StartError, Supervisor, wait_until

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WINDOW = (1400, 900)
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage")
ROOT = Path(__file__).resolve().parent.parent
SHOT = ROOT / "docs" / "status-page.png"


def missing() -> str | None:
    """Why no browser can be started here, or None when one can."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not path.is_file():
            return f"{path} is missing (apt-get install {package})"
    if importlib.util.find_spec("selenium") is None:
        return "selenium is not installed (pip install 'selenium>=4.15', the test extra)"
    return None


@contextmanager
def chromium(window: tuple[int, int] = WINDOW) -> Iterator[Any]:
    """A headless Chromium WebDriver with a fresh profile, quit on the way out."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory(prefix="gservers-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        size = f"--window-size={window[0]},{window[1]}"
        for flag in (*FLAGS, f"--user-data-dir={profile}", size):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)),
                                  options=options)
        try:
            driver.set_page_load_timeout(30)
            yield driver
        finally:
            driver.quit()


def traffic(port: int, n: int, path: str = "/") -> None:
    """``n`` GET requests through the balancer on ``port``, one after another;
    RuntimeError unless each is answered 200."""
    for _ in range(n):
        with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=10) as response:
            response.read()
            if response.status != 200:
                raise RuntimeError(f"GET {path} through the balancer: {response.status}")


def state_of(balancer: Balancer, name: str) -> str:
    """The state /stats gives backend ``name``."""
    return next(b["state"] for b in balancer.stats()["backends"] if b["name"] == name)


def screenshot(out: Path, requests: int) -> None:
    """The scene described at the top of this file, saved as a PNG in ``out``."""
    with Supervisor() as supervisor:
        ports = [supervisor.backend(0).port for _ in range(4)]
        balancer = supervisor.balancer("--workers", "2", backends=ports, cwd=str(ROOT))
        names = [f"{HOST}:{port}" for port in ports]
        if not wait_until(lambda: all(state_of(balancer, n) == "up" for n in names)):
            raise StartError(f"the backends never all came up: {balancer.stats()['backends']}")
        traffic(balancer.port, requests)
        balancer.set_backend(names[1], state="drain")
        balancer.set_backend(names[3], state="maint")
        time.sleep(1.0)  # every worker takes a change up within a second (lb.control)
        traffic(balancer.port, requests // 4)  # the two left in service share these
        with chromium() as driver:
            from selenium.webdriver.common.by import By
            from selenium.webdriver.support.ui import WebDriverWait
            driver.get(f"http://{HOST}:{balancer.admin_port}/")
            maint = f'tr[data-backend="{names[3]}"] [data-field="state"].s-maint'
            WebDriverWait(driver, 15).until(lambda d: d.find_elements(By.CSS_SELECTOR, maint))
            out.parent.mkdir(parents=True, exist_ok=True)
            if not driver.save_screenshot(str(out)):
                raise RuntimeError(f"the browser could not write {out}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/status_screenshot",
        description="Take a screenshot of the balancer's status page: four backends and "
                    "python -m lb --workers 2 are started on free ports, a few hundred "
                    "requests go through, one backend is drained and another put in "
                    "maintenance through the admin API, and headless Chromium saves the "
                    f"page (the admin listener's GET /) as a {WINDOW[0]}x{WINDOW[1]} PNG. "
                    "Every process is stopped by its PID afterwards. Needs chromium, "
                    "chromium-driver and selenium.")
    parser.add_argument("out", nargs="?", type=Path, default=SHOT,
                        help=f"where the PNG goes (default: {SHOT.relative_to(ROOT)})")
    parser.add_argument("--requests", type=int, default=400,
                        help="requests sent before the backends are changed (default: 400)")
    args = parser.parse_args(argv)
    reason = missing()
    if reason is not None:
        print(f"status_screenshot: {reason}", file=sys.stderr)
        return 1
    from selenium.common.exceptions import WebDriverException
    try:
        screenshot(args.out, args.requests)
    except (StartError, OSError, WebDriverException) as exc:
        print(f"status_screenshot: {exc}", file=sys.stderr)
        return 1
    print(f"status_screenshot: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
