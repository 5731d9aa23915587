# tests/integration/test_lb_status_page.py -- the admin listener's status page
# in a real browser.
#
# Strategy: two real backends behind a real two-worker ``python -m lb``, all
# started through their command lines, some requests sent through it, then
# the page (GET / on the admin listener) loaded in headless Chromium driven
# by Selenium (loadtests.statuspage: Debian's chromium and chromium-driver,
# nothing downloaded).  The page is read through the hooks it promises: rows
# by data-backend, cells by data-field, buttons by data-action, the requests
# total as #total-requests.  Requests sent after the page loaded must show
# up by its own polling.  A click on "drain" is checked on both sides: the
# row the page shows and the balancer's own /stats.  With --admin-token the
# token comes from the URL fragment, or from the form the page shows when
# /stats answers 401, and the buttons must send it too.  Every wait is
# bounded; the browser is quit and the processes stopped in finally blocks.
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from loadtests.statuspage import chromium, missing, traffic
from tests.support import Server, start_backend, start_lb, wait_until

REASON = missing()
if REASON is not None:
    pytest.skip(f"the status page needs a browser: {REASON}", allow_module_level=True)

from selenium.common.exceptions import (  # noqa: E402
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

WAIT = 20.0                #: seconds: hang protection only (the page polls every 2 s)
REQUESTS = 30
TOKEN = "s3cret-token"     #: --admin-token takes 8 characters or more


@pytest.fixture
def backends() -> Iterator[list[Server]]:
    servers = [start_backend(), start_backend()]
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def browser() -> Iterator[Any]:
    with chromium() as driver:  # quit in its finally
        yield driver


def names_of(servers: list[Server]) -> list[str]:
    return [f"127.0.0.1:{server.port}" for server in servers]


def until(driver: Any, condition: Callable[[Any], bool], what: str) -> None:
    """Wait up to WAIT for ``condition(driver)``; fail with what the page shows."""
    try:
        WebDriverWait(driver, WAIT, ignored_exceptions=(StaleElementReferenceException,)
                      ).until(condition)
    except TimeoutException:
        shown = driver.find_element(By.TAG_NAME, "body").text
        pytest.fail(f"the page never showed {what}; it shows:\n{shown}")


def cell(driver: Any, name: str, field: str) -> str | None:
    """The text of backend ``name``'s ``field`` cell, or None without that row."""
    found = driver.find_elements(By.CSS_SELECTOR,
                                 f'tr[data-backend="{name}"] [data-field="{field}"]')
    return found[0].text if found else None


def shown_states(driver: Any, name: str) -> tuple[str | None, str | None]:
    """Backend ``name``'s (state, admin_state) as the page shows them."""
    return cell(driver, name, "state"), cell(driver, name, "admin_state")


def total_requests(driver: Any) -> int:
    text = driver.find_element(By.ID, "total-requests").text
    return int(text) if text.isdigit() else -1


def shows_up(names: list[str]) -> Callable[[Any], bool]:
    """Both rows there with state "up", and the requests counted."""
    return lambda d: (all(cell(d, name, "state") == "up" for name in names)
                      and total_requests(d) >= REQUESTS)


def states(lb: Any, name: str) -> tuple[str, str]:
    """Backend ``name``'s (state, admin_state) in the balancer's /stats."""
    found = next(b for b in lb.stats()["backends"] if b["name"] == name)
    return found["state"], found["admin_state"]


def test_the_page_shows_the_backends_and_drains_one(backends: list[Server],
                                                    browser: Any) -> None:
    names = names_of(backends)
    lb = start_lb("--workers", "2", backends=[b.port for b in backends])
    try:
        traffic(lb.port, REQUESTS)
        browser.get(f"http://127.0.0.1:{lb.admin_port}/")
        until(browser, shows_up(names), "both backends up and the requests")
        assert sum(int(cell(browser, name, "requests") or 0) for name in names) >= REQUESTS
        assert browser.find_element(By.ID, "workers-alive").text == "2"
        assert len(browser.find_elements(By.CSS_SELECTOR, "#workers tr")) == 2
        traffic(lb.port, REQUESTS)  # counted by the next poll, with no reload
        until(browser, lambda d: total_requests(d) >= 2 * REQUESTS, "the requests sent later")

        drained = ("drain", "drain")
        drain = f'tr[data-backend="{names[0]}"] button[data-action="drain"]'
        browser.find_element(By.CSS_SELECTOR, drain).click()
        until(browser, lambda d: shown_states(d, names[0]) == drained, "the drained backend")
        assert wait_until(lambda: states(lb, names[0]) == drained), states(lb, names[0])
        assert states(lb, names[1]) == ("up", "ready")
        assert cell(browser, names[1], "state") == "up"
        assert not browser.find_element(By.ID, "action-error").is_displayed()
    finally:
        lb.server.stop()


def test_the_page_takes_the_token_from_the_fragment_or_its_form(backends: list[Server],
                                                                browser: Any) -> None:
    names = names_of(backends)
    lb = start_lb("--workers", "2", "--admin-token", TOKEN,
                  backends=[b.port for b in backends])
    try:
        traffic(lb.port, REQUESTS)
        page = f"http://127.0.0.1:{lb.admin_port}/"
        browser.get(f"{page}#token={TOKEN}")  # a fresh profile: nothing kept yet
        until(browser, shows_up(names), "the backends, with the token from the fragment")
        assert TOKEN not in browser.current_url  # dropped from the address bar
        assert not browser.find_element(By.ID, "token-form").is_displayed()

        browser.execute_script("sessionStorage.clear()")
        browser.get("about:blank")
        browser.get(page)  # no token anywhere: the form, and no figures
        form = browser.find_element(By.ID, "token-form")
        until(browser, lambda d: form.is_displayed(), "the token form")
        assert not browser.find_element(By.ID, "status").is_displayed()
        assert cell(browser, names[0], "state") is None

        browser.find_element(By.ID, "token-input").send_keys(TOKEN)
        form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        until(browser, shows_up(names), "the backends, with the token from the form")
        assert not form.is_displayed()
        # the buttons send the token too: only the balancer's answer changes the row
        browser.find_element(By.CSS_SELECTOR,
                             f'tr[data-backend="{names[1]}"] button[data-action="maint"]').click()
        until(browser, lambda d: shown_states(d, names[1]) == ("maint", "maint"),
              "the backend put in maintenance with the token")
        assert not browser.find_element(By.ID, "action-error").is_displayed()
    finally:
        lb.server.stop()
