"""The admin the way operators use it: through nginx, from a real browser.

A browser's login POST carries `Origin: http://127.0.0.1:<port>`, which
Django's CSRF check compares with the Host it was given: nginx must pass the
port on. The plain-HTTP tests pin that down (and that a foreign Origin is
still refused); the browser test drives Debian's Chromium headless through
chromedriver (Selenium, told where the driver is so that Selenium Manager
never downloads one): log in, the request-log changelist, a filter, a search
by request id, the usage summary and its chart. Screenshots are kept under
$TEST_ARTIFACTS_DIR when set, else in this session's pytest temporary
directory (printed with the test's output).
"""

from __future__ import annotations

import html
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from deploy import processes
from tests.conftest import IN_CI, require_program
from tests.processes import service_environment

from .conftest import UNLIMITED_ENV, NginxInstance, Reply, new_client_address, wait_for_log

CHANGELIST = "/admin/requestlog/requestlog/"
SUMMARY = "/admin/requestlog/requestlog/summary/"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# Nothing in the browser may reach out on its own: no updates, sync, QUIC probes.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1600,1000",
)


@pytest.fixture(scope="module")
def operator(e2e_database_url: str) -> tuple[str, str]:
    """(username, password) of a superuser made for this module in the e2e database."""
    username, password = f"operator-{secrets.token_hex(4)}", secrets.token_urlsafe(16)
    env = service_environment(DATABASE_URL=e2e_database_url) | {
        "DJANGO_SUPERUSER_PASSWORD": password
    }
    processes.manage(
        "createsuperuser", "--no-input", "--username", username, "--email", "op@example.com",
        env=env,
    )  # fmt: skip
    return username, password


@pytest.fixture(scope="module")
def app(module_stack_factory):
    """One gunicorn instance; the API unlimited, the admin login's throttle as shipped but hourly.

    Five failures an hour rather than a minute: six hashed attempts take seconds,
    and a window that ends among them (django-ratelimit's windows are fixed)
    would let the sixth through.
    """
    (instance,) = module_stack_factory.start_apps(1, **UNLIMITED_ENV, FIB_ADMIN_LOGIN_RATE="5/h")
    return instance


@pytest.fixture(scope="module")
def nginx(module_stack_factory, app):
    """nginx rendered from deploy/nginx.conf, in front of app."""
    return module_stack_factory.start_nginx([app])


# --- The CSRF origin check, with a plain HTTP client --------------------------------


def _login_post(
    nginx: NginxInstance, *, source: str, origin: str, credentials: tuple[str, str]
) -> Reply:
    """GET the login page, then POST the credentials with its CSRF token and `origin`."""
    host = f"127.0.0.1:{nginx.port}"
    page = nginx.get("/admin/login/?next=/admin/", source=source, headers={"Host": host})
    assert page.status == 200
    cookie = next(
        value.split(";")[0]
        for value in page.header_values("Set-Cookie")
        if value.startswith("csrftoken=")
    )
    match = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page.body)
    assert match, "the login page has no CSRF token"
    username, password = credentials
    body = urlencode(
        {
            "csrfmiddlewaretoken": html.unescape(match.group(1).decode()),
            "username": username,
            "password": password,
            "next": "/admin/",
        }
    ).encode()
    return nginx.get(
        "/admin/login/?next=/admin/",
        source=source,
        method="POST",
        body=body,
        headers={
            "Host": host,
            "Origin": origin,
            "Cookie": cookie,
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )


def test_login_with_a_browsers_origin_through_nginx_succeeds(nginx, operator):
    reply = _login_post(
        nginx,
        source=new_client_address(),
        origin=f"http://127.0.0.1:{nginx.port}",
        credentials=operator,
    )

    assert reply.status == 302, reply.body[:300]
    assert reply.header("Location") == "/admin/"
    assert any(value.startswith("sessionid=") for value in reply.header_values("Set-Cookie"))


@pytest.mark.parametrize(
    "origin",
    ["http://evil.example", "http://127.0.0.1", "https://127.0.0.1:{port}", "null"],
)
def test_login_from_another_origin_is_still_refused(nginx, operator, origin):
    reply = _login_post(
        nginx,
        source=new_client_address(),
        origin=origin.format(port=nginx.port),
        credentials=operator,
    )

    assert reply.status == 403
    assert b"CSRF verification failed" in reply.body


# --- The login throttle, through nginx ------------------------------------------------


def _login_posts_reaching_gunicorn(app, source: str, *, expected: int) -> int:
    """POSTs to the login in gunicorn's access log from source, once expected are there (or 3 s)."""
    deadline = time.monotonic() + 3
    while True:
        count = sum(
            1
            for entry in app.access_log_entries()
            if entry["x_real_ip"] == source
            and (entry["method"], entry["path"]) == ("POST", "/admin/login/")
        )
        if count >= expected or time.monotonic() > deadline:
            return count
        time.sleep(0.05)


def test_the_sixth_failed_login_from_an_address_is_refused_across_workers(nginx, app):
    """Counted in Redis, so two workers share one budget; the guessed username is its own."""
    source, guess = new_client_address(), (f"guess-{secrets.token_hex(4)}", "wrong")
    origin = f"http://127.0.0.1:{nginx.port}"

    answers = [
        _login_post(nginx, source=source, origin=origin, credentials=guess) for _ in range(6)
    ]

    assert [reply.status for reply in answers] == [200] * 5 + [429]
    refused = answers[-1]
    assert (refused.header("Content-Type") or "").startswith("text/html")
    assert 1 <= int(refused.header("Retry-After") or "0") <= 3_600
    assert b"Too many failed logins from your address" in refused.body, refused.body.decode()
    assert _login_posts_reaching_gunicorn(app, source, expected=6) == 6


def test_a_login_flood_from_one_address_is_held_at_nginx(nginx, app):
    source, guess = new_client_address(), (f"guess-{secrets.token_hex(4)}", "wrong")
    origin = f"http://127.0.0.1:{nginx.port}"

    statuses = [
        _login_post(nginx, source=source, origin=origin, credentials=guess).status
        for _ in range(20)
    ]

    # nginx's per-address login zone (10 a minute, a burst of 5) passes 6 at once; the
    # rest it answers itself, so they cost no worker and no password hashing.
    assert statuses.count(429) >= 14
    assert _login_posts_reaching_gunicorn(app, source, expected=8) <= 7


# --- A real browser --------------------------------------------------------------------


@pytest.fixture(scope="module")
def artifacts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go: $TEST_ARTIFACTS_DIR, else this session's pytest temp dir."""
    configured = os.environ.get("TEST_ARTIFACTS_DIR")
    if configured:
        path = Path(configured) / "admin-browser"
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("admin-browser")


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Chromium driven by Debian's chromedriver, with a new empty profile."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        if IN_CI:
            pytest.fail("selenium is not installed; CI requires it")
        pytest.skip("selenium is not installed")
    require_program("chromium")
    require_program("chromedriver")
    profile = tempfile.mkdtemp(prefix="fibonacci-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    # An explicit driver path: Selenium Manager is never asked to find or fetch one.
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _api_requests(nginx, *, source: str) -> dict[str, str]:
    """A few answered API requests from source: {'ok': request id, 'bad': request id}."""
    ids = {}
    for name, path in [
        ("ok", "/api/v1/fibonacci/?n=10"),
        ("ok2", "/api/v1/fibonacci/?n=3&offset=4"),
        ("bad", "/api/v1/fibonacci/?n=-1"),
    ]:
        reply = nginx.get(path, source=source)
        assert reply.status == (400 if name == "bad" else 200)
        ids[name] = reply.header("X-Request-ID") or ""
    return ids


def _result_rows(browser: Any) -> list[Any]:
    from selenium.webdriver.common.by import By

    rows: list[Any] = browser.find_elements(By.CSS_SELECTOR, "#result_list tbody tr")
    return rows


def test_an_operator_uses_the_admin_in_a_browser(
    nginx, operator, browser, artifacts_dir, e2e_database_url
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    source = new_client_address()
    ids = _api_requests(nginx, source=source)
    rows = wait_for_log(e2e_database_url, client_ip=source, done=lambda rows: len(rows) >= 3)
    assert {row[0] for row in rows} == set(ids.values())
    base = f"http://127.0.0.1:{nginx.port}"
    wait = WebDriverWait(browser, 15)

    def screenshot(name: str) -> None:
        path = artifacts_dir / f"{name}.png"
        assert browser.save_screenshot(str(path)), path
        print(f"screenshot: {path}")

    try:
        # Log in, as an operator does: the form, the password, the button.
        browser.get(f"{base}/admin/")
        wait.until(expected_conditions.presence_of_element_located((By.ID, "login-form")))
        username, password = operator
        browser.find_element(By.ID, "id_username").send_keys(username)
        browser.find_element(By.ID, "id_password").send_keys(password)
        browser.find_element(By.CSS_SELECTOR, "#login-form input[type=submit]").click()
        wait.until(expected_conditions.url_to_be(f"{base}/admin/"))
        assert "Site administration" in browser.title
        assert "CSRF" not in browser.page_source

        # The request log's changelist, filtered to 4xx: only the bad request is ours.
        browser.get(f"{base}{CHANGELIST}")
        wait.until(expected_conditions.presence_of_element_located((By.ID, "result_list")))
        browser.find_element(
            By.CSS_SELECTOR, "#changelist-filter a[href*='status_class=4']"
        ).click()
        wait.until(expected_conditions.url_contains("status_class=4"))
        statuses = [
            cell.text
            for cell in browser.find_elements(By.CSS_SELECTOR, "#result_list .field-status")
        ]
        assert statuses and all(status.startswith("4") for status in statuses), statuses
        ours = [row.text for row in _result_rows(browser) if source in row.text]
        assert len(ours) == 1 and " 400 " in f" {ours[0]} ", ours

        # A search by request id finds that one request.
        browser.get(f"{base}{CHANGELIST}")
        search = wait.until(expected_conditions.presence_of_element_located((By.ID, "searchbar")))
        search.send_keys(ids["ok"])
        browser.find_element(By.CSS_SELECTOR, "#changelist-search input[type=submit]").click()
        wait.until(expected_conditions.url_contains("q="))
        [found] = [row.text for row in _result_rows(browser)]
        assert source in found and "n=10 offset=0" in found and " 200 " in f" {found} ", found
        screenshot("changelist-search")

        # The usage summary, from the changelist's own link, with its chart.
        browser.find_element(By.CSS_SELECTOR, f".object-tools a[href='{SUMMARY}']").click()
        wait.until(expected_conditions.url_contains(SUMMARY))
        bars = browser.find_elements(By.CSS_SELECTOR, "svg.summary-chart rect")
        assert bars, "the summary has no chart bars"
        assert all(bar.size["height"] > 0 and bar.size["width"] > 0 for bar in bars)
        heading = browser.find_element(By.CSS_SELECTOR, "#content-main h2").text
        assert re.match(r"\d+ requests? from ", heading), heading
        assert int(heading.split()[0]) >= 3
        screenshot("usage-summary")
    except Exception:
        screenshot("failure")
        raise
