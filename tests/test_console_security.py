"""The web console's security and accessibility rules, in a real browser: session cookie flags,
no token readable by script, CSP without 'unsafe-inline', CSRF (cross-site and forged posts),
escaping of every displayed name, the API's access rules for forged admin actions and other
organizations' URLs, keyboard use and a phone-width screen."""
import re

import requests

from tests.console import accept_link
from tests.support import Mailbox, join, superuser_token, unique_email


def logged_in(person, account):
    person.login(account.email, account.password)
    assert "/orgs/" in person.page.url, person.page.url
    return person


def test_session_cookie_is_httponly_lax_sealed_and_secure_over_https(people, gateway, test_stack):
    owner = gateway.signup(organization_name="Cookie Lab")
    person = logged_in(people("cookie"), owner)
    cookies = {c["name"]: c for c in person.context.cookies()}
    session = cookies["console_session"]
    assert session["httpOnly"] is True and session["sameSite"] == "Lax" and session["secure"] is False
    assert set(cookies) == {"console_session"}
    # sealed: no token inside is readable, not even base64-decoded
    assert "eyJ" not in session["value"] and owner.token not in session["value"]
    # nothing for scripts: not in document.cookie, nothing in web storage
    assert "console_session" not in person.page.evaluate("document.cookie")
    assert person.page.evaluate("localStorage.length + sessionStorage.length") == 0
    # a tampered cookie is no session at all
    person.context.add_cookies([dict(session, value=session["value"][:-4] + "AAAA")])
    person.goto(f"/orgs/{owner.org_id}")
    assert person.page.url.endswith("/login")
    # over https (the proxy says so) the cookie is Secure
    answer = requests.get(test_stack.upstream_url + "/login", headers={"X-Forwarded-Proto": "https"}, timeout=10)
    assert re.search(r"console_session=[^;]+;.*\bSecure\b", answer.headers["Set-Cookie"]), answer.headers
    assert "HttpOnly" in answer.headers["Set-Cookie"] and "SameSite=Lax" in answer.headers["Set-Cookie"]


def test_every_page_has_a_strict_csp_and_no_inline_script_or_style(people, gateway):
    owner = gateway.signup(organization_name="CSP Lab")
    person = people("csp")
    pages = ["/login", "/signup"]
    for path in pages:
        response = person.goto(path)
        assert_strict(response, person)
    logged_in(person, owner)
    for tab in ("", "/members", "/notifications", "/delete"):
        response = person.goto(f"/orgs/{owner.org_id}{tab}")
        assert response.status == 200
        assert_strict(response, person)
    response = person.goto("/account/password")
    assert_strict(response, person)


def assert_strict(response, person):
    csp = response.headers["content-security-policy"]
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";") if " " in d.strip())
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'" and directives["form-action"] == "'self'"
    html = person.page.content()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "inline script"
    assert not re.search(r"<[^>]+\sstyle=", html) and "<style" not in html, "inline style"
    assert not re.search(r"<[^>]+\son[a-z]+=", html), "inline event handler"


def test_a_cross_site_form_post_is_refused(people, gateway, test_stack):
    owner = gateway.signup(organization_name="CSRF Lab")
    person = logged_in(people("csrf"), owner)
    target = f"{test_stack.gateway_url}/orgs/{owner.org_id}/name"
    # the attacker's page, on another site, posts a form to the console as soon as it loads
    evil = ("<!doctype html><html lang=\"en\"><title>win a prize</title><form id=\"f\" method=\"post\" "
            f"action=\"{target}\"><input name=\"name\" value=\"Hacked\"><input name=\"csrf_token\" "
            "value=\"guess\"></form><script>document.getElementById(\"f\").submit()</script></html>")
    person.page.route("http://evil.example.test/**", lambda route: route.fulfill(
        status=200, content_type="text/html", body=evil))
    with person.page.expect_response(target) as answer:
        person.page.goto("http://evil.example.test/")
    assert answer.value.status == 403
    assert "sent from another site" in person.page.locator("main").inner_text()
    # the same person's own session, with their cookie but without the form's token: refused too
    assert person.post(f"/orgs/{owner.org_id}/name", {"name": "Hacked"}).status == 403
    # the right token but another site's Origin: refused
    token = person.goto(f"/orgs/{owner.org_id}") and person.csrf_token()
    forged = person.context.request.post(target, form={"name": "Hacked", "csrf_token": token},
                                         headers={"Origin": "http://evil.example.test"}, max_redirects=0)
    assert forged.status == 403
    assert gateway.get(f"/organizations/{owner.org_id}", owner.token).json()["name"] == "CSRF Lab"
    # and with both, it works (the test above is not refusing everything)
    assert person.post(f"/orgs/{owner.org_id}/name", {"name": "CSRF Lab 2", "csrf_token": token}).status == 302
    assert gateway.get(f"/organizations/{owner.org_id}", owner.token).json()["name"] == "CSRF Lab 2"


XSS_ORG = '<script>alert("org")</script>'
XSS_USER = '<img src=x onerror=alert("user")>'
XSS_MEMBER = '"><svg onload=alert("member")>'


def test_names_are_escaped_everywhere(people, gateway, tap, test_stack):
    mailbox = Mailbox(test_stack.mail_dir)
    owner = gateway.signup(organization_name=XSS_ORG, name=XSS_USER)
    member = join(gateway, tap, owner, "member", name=XSS_MEMBER)
    invited = unique_email("xss")
    assert gateway.post(f"/organizations/{owner.org_id}/invites", {"emails": [invited], "role": "member"},
                        owner.token).status_code == 201
    person = logged_in(people("xss"), owner)
    pages = {f"/orgs/{owner.org_id}": [XSS_ORG, XSS_USER], f"/orgs/{owner.org_id}/members": [XSS_USER, XSS_MEMBER],
             f"/orgs/{owner.org_id}/notifications": [], f"/orgs/{owner.org_id}/delete": [XSS_ORG]}
    for path, texts in pages.items():
        person.goto(path)
        shown = person.page.locator("main").inner_text()
        for text in texts:
            assert text in shown, (path, text)
        assert person.heading() == XSS_ORG
    menu = person.open_menu().inner_text()
    assert XSS_USER in menu and XSS_ORG in menu
    person.check("xss-menu")
    # the invitation page shows the organization's and the inviter's names
    link = accept_link(mailbox.wait(invited)[0])
    stranger = people("xss-invite")
    stranger.goto(link)
    facts = stranger.page.locator("dl.facts").inner_text()
    assert XSS_ORG in facts and XSS_USER in facts
    stranger.check("xss-invite")
    # the operator's look-up
    operator = people("xss-operator")
    from tests.support import SUPERUSER
    operator.login(SUPERUSER["email"], SUPERUSER["password"])
    operator.goto(f"/operator?org_id={owner.org_id}")
    assert operator.page.locator("#looked-up").inner_text() == XSS_ORG
    assert not person.dialogs and not stranger.dialogs and not operator.dialogs
    # the member's own avatar menu
    other = logged_in(people("xss-member"), member)
    assert XSS_MEMBER in other.open_menu().inner_text()
    # ... who, logged in, opens the invitation mailed to someone else: refused, in plain words
    other.goto(link)
    other.submit(f"Join {XSS_ORG}")
    assert f"mailed to another address than {member.email}" in other.page.locator(".flash.error").inner_text()
    assert other.page.get_by_role("button", name=re.compile("^Join")).count() == 0
    other.check("invite-wrong-address")
    assert not other.dialogs
    assert superuser_token(gateway)


def test_a_members_forged_admin_actions_are_refused_like_the_api(people, gateway, tap):
    owner = gateway.signup(organization_name="Forgery Lab")
    manager = join(gateway, tap, owner, "dataset_manager", name="Dana Manager")
    person = logged_in(people("forger"), manager)
    person.goto(f"/orgs/{owner.org_id}")
    token = person.csrf_token()  # a valid CSRF token: only the access rules stand in the way
    org = owner.org_id
    forged = {
        f"/orgs/{org}/name": {"name": "Mine now"},
        f"/orgs/{org}/invites": {"emails": "friend@example.test", "role": "admin"},
        f"/orgs/{org}/members/{manager.user_id}/role": {"role": "admin"},
        f"/orgs/{org}/members/{owner.user_id}/remove": {},
        f"/orgs/{org}/ownership": {"user_id": manager.user_id},
        f"/orgs/{org}/notifications": {"plan_email": "me@example.test", "new_user_email": "",
                                         "ai_job_recipients": "admins"},
        f"/orgs/{org}/delete": {"confirm_name": "Forgery Lab"},
        "/operator/plan": {"org_id": org, "name": "power", "included_users": "", "included_storage_gb": "",
                           "paid_until": ""},
        "/operator/credits": {"org_id": org, "credits": "1000"},
    }
    for path, form in forged.items():
        answer = person.post(path, dict(form, csrf_token=token))
        assert answer.status == 403, (path, answer.status)
    for path in (f"/orgs/{org}/notifications", f"/orgs/{org}/delete", f"/orgs/{org}/export", "/operator"):
        assert person.goto(path).status == 403, path
    overview = gateway.get(f"/organizations/{org}", owner.token).json()
    assert overview["name"] == "Forgery Lab" and overview["status"] == "active" and overview["plan"]["name"] != "power"
    roles = {m["user_id"]: m["role"] for m in gateway.get(f"/organizations/{org}/members", owner.token).json()["items"]}
    assert roles == {owner.user_id: "admin", manager.user_id: "dataset_manager"}
    person.goto(f"/orgs/{org}/delete")
    person.check("forbidden")


def test_another_organizations_url_is_refused(people, gateway):
    mine = gateway.signup(organization_name="My Lab")
    theirs = gateway.signup(organization_name="Their Lab")
    person = logged_in(people("other-org"), mine)
    for tab in ("", "/members", "/notifications", "/delete", "/export"):
        response = person.goto(f"/orgs/{theirs.org_id}{tab}")
        assert response.status == 403, tab
        assert "Their Lab" not in person.page.content()
    assert "organization you are not signed in to" in person.page.locator("main").inner_text()
    person.goto(f"/orgs/{mine.org_id}")
    assert person.heading() == "My Lab"


def test_keyboard_only_login_and_menu_and_phone_width(people, gateway, tap):
    owner = gateway.signup(organization_name="Keyboard Lab", name="Kim Keys")
    person = people("keyboard")
    person.goto("/login")
    focused = []
    for _ in range(5):
        person.page.keyboard.press("Tab")
        focused.append(person.page.evaluate("document.activeElement.id || document.activeElement.textContent.trim()"))
    assert focused[:4] == ["Skip to content", "Organizations", "f-email", "f-password"], focused
    # focus is visible: the focused control draws an outline
    person.page.get_by_label("Email", exact=True).focus()
    person.page.keyboard.press("Shift+Tab")
    person.page.keyboard.press("Tab")
    outline = person.page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("none", ""), outline
    person.page.keyboard.type(owner.email)
    person.page.keyboard.press("Tab")
    person.page.keyboard.type(owner.password)
    with person.page.expect_navigation():
        person.page.keyboard.press("Enter")
    assert person.heading() == "Keyboard Lab"
    # the avatar menu opens with the keyboard
    person.page.locator("#avatar-menu summary").focus()
    person.page.keyboard.press("Enter")
    assert person.page.locator("#avatar-menu").get_attribute("open") is not None
    assert person.page.get_by_role("button", name="Log out").is_visible()
    person.page.keyboard.press("Escape")
    assert person.page.locator("#avatar-menu").get_attribute("open") is None

    # a phone-width screen: nothing wider than the screen, every page still passes axe; the tables of
    # people (a member with a role picker and actions, a pending invitation) need no sideways scrolling
    join(gateway, tap, owner, "member", name="Maximiliane Montgomery-Smythe")
    invited = gateway.post(f"/organizations/{owner.org_id}/invites",
                           {"emails": [unique_email("a-rather-long-address-for-a-phone")], "role": "member"},
                           owner.token)
    assert invited.status_code == 201, invited.text
    phone = people("phone", viewport={"width": 375, "height": 740})
    logged_in(phone, owner)
    for tab in ("", "/members", "/notifications", "/activity", "/delete"):
        phone.goto(f"/orgs/{owner.org_id}{tab}")
        assert phone.page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), tab
        wide = phone.page.evaluate("Array.from(document.querySelectorAll('.table-wrap'))"
                                   ".filter(w => w.scrollWidth > w.clientWidth + 1)"
                                   ".map(w => w.getAttribute('aria-label'))")
        assert not wide, (tab, wide)
        phone.check(f'phone{tab.replace("/", "-")}')


def test_delete_needs_the_owner_or_an_admin_holding_the_right(people, gateway, tap):
    owner = gateway.signup(organization_name="Right Lab")
    admin = join(gateway, tap, owner, "admin", name="Alex Admin")
    person = logged_in(people("no-right"), admin)
    person.goto(f"/orgs/{owner.org_id}/delete")
    button = person.page.get_by_role("button", name="Delete this organization")
    assert button.is_disabled()
    assert "Only the owner, or an admin holding the deletion right" in person.page.locator("#delete-why").inner_text()
    person.check("delete-no-right")
    forged = person.post(f"/orgs/{owner.org_id}/delete",
                         {"confirm_name": "Right Lab", "csrf_token": person.csrf_token()})
    assert forged.status == 403
    assert gateway.get(f"/organizations/{owner.org_id}", owner.token).json()["status"] == "active"
    # the owner grants the right: the same admin's page enables the button (once the name is typed)
    granted = gateway.patch(f"/organizations/{owner.org_id}/members/{admin.user_id}",
                            {"can_delete_organization": True}, owner.token)
    assert granted.status_code == 200, granted.text
    person.goto(f"/orgs/{owner.org_id}/delete")
    person.page.get_by_label(re.compile("Type the organization's name")).fill("Right Lab")
    assert person.page.get_by_role("button", name="Delete this organization").is_enabled()


def test_an_expired_access_token_is_renewed_server_side_with_the_refresh_token(people, gateway, test_stack):
    """The console presents the session's refresh token itself when the access token has expired:
    the page simply works, and the cookie then holds a new pair (still sealed)."""
    import os
    import time

    import jwt

    from gateway.console.session import Sealer
    from tests.tokens import real_key

    owner = gateway.signup(organization_name="Refresh Lab")
    person = logged_in(people("refresh"), owner)
    with open(os.path.join(test_stack.var, "secrets", "console-session.key")) as handle:
        sealer = Sealer(handle.read().strip())
    cookie = next(c for c in person.context.cookies() if c["name"] == "console_session")
    session = sealer.open(cookie["value"])
    claims = jwt.decode(session["a"], options={"verify_signature": False})
    key, kid = real_key(test_stack)
    now = int(time.time())
    expired = jwt.encode(dict(claims, iat=now - 1000, exp=now - 10, jti="expired-" + claims["jti"]), key,
                         algorithm="EdDSA", headers={"kid": kid})
    assert gateway.get("/me", expired).status_code == 401
    person.context.add_cookies([dict(cookie, value=sealer.seal(dict(session, a=expired)))])
    response = person.goto(f"/orgs/{owner.org_id}")
    assert response.status == 200 and person.heading() == "Refresh Lab"
    renewed = sealer.open(next(c for c in person.context.cookies() if c["name"] == "console_session")["value"])
    assert renewed["a"] != expired and renewed["r"] != session["r"]
    assert jwt.decode(renewed["a"], options={"verify_signature": False})["exp"] > now
    # logging in as someone else in this browser ends that session server-side, not just here
    other = gateway.signup(organization_name="Other Lab")
    person.login(other.email, other.password)
    assert person.heading() == "Other Lab"
    assert gateway.post("/auth/refresh", {"refresh_token": renewed["r"]}).status_code == 401
    assert gateway.get("/me", renewed["a"]).status_code == 401
