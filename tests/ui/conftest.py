"""Browser tests: Playwright for Python driving Debian's chromium (no browser download)."""

from __future__ import annotations

import os

import pytest
from playwright.sync_api import sync_playwright

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
PASSWORD = "correct horse battery staple"  # noqa: S105 - the test users' (tests/factories.py)
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def chromium():
    """One chromium per module (launching it is the slow part). Playwright's sync API keeps an
    event loop running in this thread, so Django's guard against sync calls from async code
    is lifted while it runs, and put back after."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)")
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            yield browser
            browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


# Every Content-Security-Policy violation (an inline script or style the policy blocked) becomes a
# console error, so no test passes with one. Playwright injects this outside the page's policy.
CSP_LISTENER = """
document.addEventListener("securitypolicyviolation", function (e) {
  console.error("CSP violation: " + e.effectiveDirective + " blocked " + (e.blockedURI || "inline")
    + " at " + e.sourceFile + ":" + e.lineNumber + " (" + (e.sample || "") + ")");
});
"""


class ConsoleErrors(list):
    """Console errors, uncaught exceptions and CSP violations of every page a test opened."""

    def watch(self, page) -> None:
        page.add_init_script(CSP_LISTENER)
        page.on(
            "console", lambda msg: self.append(f"{page.url}: {msg.text}") if msg.type == "error" else None
        )
        page.on("pageerror", lambda exc: self.append(f"{page.url}: {exc}"))

    @property
    def csp_violations(self) -> list[str]:
        return [e for e in self if "CSP violation" in e]


@pytest.fixture
def console_errors():
    errors = ConsoleErrors()
    yield errors
    assert not errors, "console errors:\n" + "\n".join(errors)


@pytest.fixture
def open_browser(chromium, live_server, console_errors):
    """``open_browser(user, width=1280)``: a page signed in as ``user`` through the login form."""
    contexts = []

    def make(user, *, width: int = 1280, height: int = 900, password: str = PASSWORD):
        context = chromium.new_context(viewport={"width": width, "height": height}, base_url=live_server.url)
        context.set_default_timeout(15000)
        contexts.append(context)
        page = context.new_page()
        console_errors.watch(page)
        page.goto("/login/")
        page.fill("input[name=username]", user.username)
        page.fill("input[name=password]", password)
        page.click("button[type=submit]")
        page.wait_for_url(f"{live_server.url}/")
        return page

    yield make
    for context in contexts:
        context.close()
