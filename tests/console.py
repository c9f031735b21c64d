"""Helpers for the web console's browser tests: a person in a browser context of their own.

Every page a test looks at is checked (:meth:`Person.check`): a screenshot under
``test-artifacts/console/`` and an axe-core run (injected into the page) that must find no
violation of impact "serious" or "critical".
"""
import json
import os
import re
import time

from tests.support import wait_until

#: screenshots of every checked page (gitignored)
ARTIFACTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "test-artifacts", "console")
PASSWORD = "correct horse battery"
BAD_IMPACTS = ("serious", "critical")
_axe = None
CHECKED = []  # (page name, url) of every checked page, for the summary


def axe():
    global _axe
    if _axe is None:
        from axe_playwright_python.sync_playwright import Axe

        _axe = Axe()
    return _axe


class Person:
    """One person's browser context (own cookies) on the console."""

    def __init__(self, browser, base_url, label, viewport=None):
        self.base_url = base_url
        self.label = label
        self.context = browser.new_context(base_url=base_url, viewport=viewport or {"width": 1200, "height": 900},
                                           accept_downloads=True)
        self.page = self.context.new_page()
        self.dialogs = []

        def on_dialog(dialog):  # data-confirm questions are answered yes; any other dialog is recorded
            self.dialogs.append((dialog.type, dialog.message))
            dialog.accept()
        self.page.on("dialog", on_dialog)
        self.responses = []
        self.page.on("response", lambda response: self.responses.append(response))

    def close(self):
        self.context.close()

    def goto(self, path):
        response = self.page.goto(path)
        return response

    def check(self, name):
        """Screenshot and accessibility check of the page as it is now."""
        self.page.wait_for_load_state("load")
        path = os.path.join(ARTIFACTS, f"{self.label}-{name}.png")
        self.page.screenshot(path=path, full_page=True)
        results = axe().run(self.page)
        bad = [v for v in results.response["violations"] if v.get("impact") in BAD_IMPACTS]
        found = json.dumps([{"id": v["id"], "impact": v["impact"], "nodes": [n["html"] for n in v["nodes"]][:3]}
                            for v in bad], indent=1)
        assert not bad, f"{name}: axe found {found}"
        CHECKED.append((name, self.page.url))

    def fill(self, label, value):
        self.page.get_by_label(label, exact=True).fill(value)

    def submit(self, button_name):
        """Click a button and wait for the page it leads to."""
        with self.page.expect_navigation():
            self.page.get_by_role("button", name=button_name, exact=True).click()

    def flash(self):
        return self.page.locator(".flash").first.inner_text()

    def heading(self):
        return self.page.locator("h1").first.inner_text()

    def signup(self, name, email, organization_name):
        self.goto("/signup")
        self.check("signup")
        self.fill("Your name", name)
        self.fill("Email", email)
        self.fill("Password", PASSWORD)
        self.fill("Organization name", organization_name)
        self.submit("Sign up")
        assert re.search(r"/orgs/[^/]+$", self.page.url), self.page.url
        return self.page.url.rsplit("/", 1)[1]

    def login(self, email, password=PASSWORD):
        self.goto("/login")
        self.fill("Email", email)
        self.fill("Password", password)
        self.submit("Log in")

    def open_menu(self):
        menu = self.page.locator("#avatar-menu")
        if menu.get_attribute("open") is None:
            self.page.locator("#avatar-menu summary").click()
        return menu

    def switch_to(self, organization_name):
        self.open_menu()
        with self.page.expect_navigation():
            self.page.locator("#avatar-menu .org-list").get_by_role("button", name=organization_name,
                                                                    exact=True).click()

    def csrf_token(self):
        return self.page.locator("input[name=csrf_token]").first.get_attribute("value")

    def post(self, path, form):
        """A form post as this person's browser would send it (same cookies), e.g. a forged one."""
        return self.context.request.post(self.base_url + path, form=form, max_redirects=0)


def accept_link(mail):
    """The accept link of an invitation mail."""
    match = re.search(r"https?://\S+/invites/[A-Za-z0-9_-]+", mail.text)
    assert match, mail.text
    return match.group(0)


def until(check, timeout=15.0, what="condition"):
    return wait_until(check, timeout=timeout, interval=0.1, what=what)


def elapsed_since(start):
    return time.monotonic() - start
