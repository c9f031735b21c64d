"""The web console in a real browser (Debian's Chromium through Playwright), on the real stack.

The journey: sign up -> overview -> rename (an inline error first) -> invite two addresses -> the
invitees open the accept link from the mail in browsers of their own (one signs up there, one
already has an account and joins with one click) -> switch organizations from the avatar menu ->
notification settings and a delivery in the log -> an operator sets the plan and grants credits ->
role change -> removal (the removed member's open console session fails within 1 s) -> export ->
delete with typed confirmation -> the progress view reaches "deleted". Every page on the way is
screenshotted and checked with axe-core (``tests/console.py``).
"""
import json
import os
import re
import time

from tests.console import PASSWORD, accept_link, until
from tests.support import SUPERUSER, Mailbox, join, superuser_token, unique_email


def test_journey(people, test_stack, gateway):
    mailbox = Mailbox(test_stack.mail_dir)
    ada_email, grace_email, linus_email = unique_email("ada"), unique_email("grace"), unique_email("linus")

    # -- sign up: the overview shows the organization
    ada = people("owner")
    ada.goto("/")
    assert ada.page.url.endswith("/login")
    ada.check("login")
    org_id = ada.signup("Ada Lovelace", ada_email, "Lovelace Lab")
    assert ada.heading() == "Lovelace Lab"
    assert "Ada Lovelace" in ada.page.locator(".card", has_text="Owner").inner_text()
    ada.check("overview")

    # -- rename: an inline error next to the field, then the new name
    ada.fill("Organization name", "x" * 101)
    ada.submit("Save name")
    error = ada.page.locator("#f-name-error")
    assert "between 1 and 100" in error.inner_text()
    assert ada.page.get_by_label("Organization name", exact=True).get_attribute("aria-invalid") == "true"
    ada.check("overview-rename-error")
    ada.fill("Organization name", "Analytical Engines")
    ada.submit("Save name")
    assert ada.flash() == "The organization is renamed."
    assert ada.heading() == "Analytical Engines"
    assert gateway.get(f"/organizations/{org_id}", token=None).status_code == 401  # (the API still wants a token)

    # -- invite two addresses
    ada.page.get_by_role("link", name="Members").click()
    ada.page.wait_for_url(re.compile(r"/members$"))
    ada.fill("Email addresses", f"{grace_email}, {linus_email}")
    ada.page.get_by_label("Role", exact=True).select_option("member")
    ada.submit("Send invitations")
    assert grace_email in ada.flash() and linus_email in ada.flash()
    assert ada.page.locator("tr[data-invite]").count() == 2
    ada.check("members")

    # -- Grace opens the link from the mail in her own browser and signs up there
    grace_link = accept_link(mailbox.wait(grace_email, "invit")[0])
    assert grace_link.startswith(test_stack.gateway_url + "/invites/")
    grace = people("invitee-new")
    grace.goto(grace_link)
    facts = grace.page.locator("dl.facts").inner_text()
    assert "Analytical Engines" in facts and "Ada Lovelace" in facts and "Member" in facts
    grace.check("invite")
    grace.fill("Email", grace_email)
    grace.fill("Your name", "Grace Hopper")
    grace.fill("Password", PASSWORD)
    grace.submit("Sign up and join")
    assert grace.page.url.endswith(f"/orgs/{org_id}")
    assert grace.flash() == "Welcome to Analytical Engines."
    # a member sees a read-only overview: no rename, no admin tabs
    assert grace.page.get_by_label("Organization name", exact=True).count() == 0
    assert grace.page.get_by_role("link", name="Notifications").count() == 0
    assert "read-only" in grace.page.locator(".org-head").inner_text()
    grace.check("overview-member")

    # -- Linus already has an account (and an organization): logged in, he joins with one click
    linus = people("invitee-account")
    linus_org = linus.signup("Linus T", linus_email, "Kernel Folks")
    linus_link = accept_link(mailbox.wait(linus_email, "invit")[0])
    linus.goto(linus_link)
    linus.check("invite-logged-in")
    linus.submit("Join Analytical Engines")
    assert linus.page.url.endswith(f"/orgs/{org_id}")

    # -- the used link now answers a clear page
    response = linus.goto(linus_link)
    assert response.status == 404
    assert "does not work any more" in linus.heading()
    linus.check("invite-used")

    # -- switch organizations from the avatar menu: only his organizations, the current one marked
    linus.goto(f"/orgs/{org_id}")
    menu = linus.open_menu()
    assert menu.locator("[aria-current=true]").inner_text().startswith("Analytical Engines")
    names = sorted(b.inner_text() for b in menu.locator(".org-list button").all())
    assert names == ["Kernel Folks"]
    linus.check("avatar-menu")
    linus.switch_to("Kernel Folks")
    assert linus.page.url.endswith(f"/orgs/{linus_org}")
    assert linus.heading() == "Kernel Folks"
    # the last-used organization is what the next login opens
    linus.page.locator("#avatar-menu summary").click()
    linus.submit("Log out")
    assert linus.flash() == "You are logged out."
    linus.login(linus_email)
    assert linus.page.url.endswith(f"/orgs/{linus_org}")
    # a link into his other organization: refused as the API refuses it, with the switch offered
    assert linus.goto(f"/orgs/{org_id}/members").status == 403
    linus.check("wrong-organization")
    linus.submit("Switch to Analytical Engines")
    assert linus.heading() == "Analytical Engines"
    linus.switch_to("Kernel Folks")
    linus.switch_to("Analytical Engines")
    assert linus.heading() == "Analytical Engines"

    # -- notification settings, and a delivery in the log
    ada.page.get_by_role("link", name="Notifications").click()
    ada.page.wait_for_url(re.compile(r"/notifications$"))
    ada.fill("Plan and subscription mail goes to", "not an address")
    ada.submit("Save settings")
    assert ada.page.locator("#f-plan_email-error").is_visible()
    ada.fill("Plan and subscription mail goes to", "billing@example.test")
    ada.fill("New member sign-ups are reported to", "")
    ada.page.get_by_label("Every admin", exact=True).check()
    ada.submit("Save settings")
    assert ada.flash() == "Notification settings saved."
    assert ada.page.get_by_label("Plan and subscription mail goes to", exact=True).input_value() == \
        "billing@example.test"
    assert ada.page.get_by_label("Every admin", exact=True).is_checked()

    def a_sent_delivery():
        ada.page.reload()
        return ada.page.locator("tr.delivery", has_text="Sent").count()
    until(a_sent_delivery, what="a sent delivery in the console's log")
    ada.check("notifications")

    # -- a platform operator sets the plan (paid period ending soon) and grants credits
    operator = people("operator")
    operator.login(SUPERUSER["email"], SUPERUSER["password"])
    operator.check("home")  # an account in no organization
    operator.page.get_by_role("link", name="Open the operator console").click()
    operator.page.wait_for_url(re.compile(r"/operator$"))
    operator.goto(f"/operator?org_id={org_id}")
    assert operator.page.locator("#looked-up").inner_text() == "Analytical Engines"
    soon = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 10 * 86400))
    operator.page.get_by_label("Plan", exact=True).select_option("team")
    operator.fill("Included users", "5")
    operator.fill("Included storage (GB)", "0.000001")
    operator.fill("Paid until", soon)
    operator.submit("Set plan")
    assert operator.flash() == "The plan is set."
    operator.fill("Credits", "12.5")
    operator.fill("Comment", "welcome credits")
    operator.submit("Grant")
    assert operator.flash() == "Credits granted."
    until(lambda: operator.page.reload() and operator.page.locator("#operator-balance").inner_text() == "12.5",
          what="the granted credits in the overview (the org service learns them from an event)")
    operator.check("operator")
    operator.goto("/operator?org_id=no-such-organization")
    assert operator.page.locator(".flash.error").inner_text() == "No organization has this id."
    # storage beyond the plan: the bar's "exceeded" stands out on the overview
    report = gateway.post(f"/organizations/{org_id}/storage-reports",
                          {"datasets": [{"dataset_id": "d1", "bytes": 5000}], "complete": True},
                          token=superuser_token(gateway))
    assert report.status_code == 201, report.text

    def overview_shows_everything():
        ada.goto(f"/orgs/{org_id}")
        text = ada.page.locator(".cards").inner_text()
        return "Team" in text and "Storage exceeded" in text and "12.5" in text
    until(overview_shows_everything, what="plan, storage and credits on the overview")
    assert f"The paid period ends on {soon}" in ada.page.locator(".warning").first.inner_text()
    ada.page.locator("#ledger-section table", has_text="welcome credits").wait_for()  # embedded by the script
    ada.goto(f"/orgs/{org_id}/credits")  # the ledger's own page (what the link leads to without the script)
    assert ada.page.locator("table", has_text="welcome credits").count() == 1
    ada.check("credits")
    ada.goto(f"/orgs/{org_id}")
    ada.page.locator("#ledger-section table", has_text="welcome credits").wait_for()
    assert "3 of 5 included" in ada.page.locator(".card", has_text="Members").inner_text()
    ada.check("overview-plan")

    # -- role change: Grace becomes a dataset manager; her open session follows, not logged out
    ada.goto(f"/orgs/{org_id}/members")
    row = ada.page.locator(f"tr[data-member='{grace_email}']")
    row.get_by_label("Role of Grace Hopper").select_option("dataset_manager")
    with ada.page.expect_navigation():
        row.get_by_role("button", name="Change role of Grace Hopper").click()
    assert ada.flash() == "The role is changed to Dataset manager."
    until(lambda: grace.goto(f"/orgs/{org_id}") and "dataset manager" in grace.page.locator(".org-head").inner_text(),
          what="Grace's console showing her new role")

    # -- removal: Grace's open console session fails within 1 s
    row = ada.page.locator(f"tr[data-member='{grace_email}']")
    with ada.page.expect_navigation():
        row.get_by_role("button", name="Remove Grace Hopper").click()
    removed_at = time.monotonic()
    assert ada.flash() == "The member is removed."
    assert ada.page.locator(f"tr[data-member='{grace_email}']").count() == 0
    refused_after = None
    deadline = removed_at + 10
    while time.monotonic() < deadline:
        sent_at = time.monotonic() - removed_at
        grace.goto(f"/orgs/{org_id}")
        if grace.page.url.endswith("/login"):
            refused_after = sent_at
            break
    assert refused_after is not None and refused_after < 1.0, refused_after
    assert grace.flash() == "Your session has ended. Please log in again."

    # -- export, then delete with typed confirmation, and follow the progress to the end
    ada.page.get_by_role("link", name="Delete").click()
    ada.page.wait_for_url(re.compile(r"/delete$"))
    ada.check("delete")
    with ada.page.expect_download() as download:
        ada.page.get_by_role("link", name="Download export (JSON)").click()
    exported = json.loads(open(download.value.path()).read())
    assert exported["organization_id"] == org_id and exported["org"] and exported["membership"]
    button = ada.page.get_by_role("button", name="Delete this organization")
    ada.page.get_by_label(re.compile("Type the organization's name")).fill("Analytical")
    assert button.is_disabled()
    ada.page.get_by_label(re.compile("Type the organization's name")).fill("Analytical Engines")
    assert button.is_enabled()
    with ada.page.expect_navigation():
        button.click()
    assert ada.page.url.endswith("/deletion")
    assert ada.heading() == "Deleting Analytical Engines"
    until(lambda: ada.page.locator("#deletion-status").inner_text() == "Deleted", timeout=90,
          what="the progress view reaching deleted")
    assert [s.inner_text() for s in ada.page.locator("[data-service]").all()] == ["purged"] * 5
    ada.check("deletion")
    # invitation tokens and the deletion receipt never reach the access log (paths are redacted,
    # the receipt travels only inside the sealed cookie)
    with open(os.path.join(test_stack.log_dir, "gateway.log")) as handle:
        log = handle.read()
    for link in (grace_link, linus_link):
        assert link.rsplit("/", 1)[1] not in log
    assert "/invites/[redacted]" in log
    # the organization is gone for Linus too; his own organization stays
    linus.goto(f"/orgs/{linus_org}")
    assert linus.page.url.endswith("/login") or linus.heading() in ("Kernel Folks", "Sorry")


def console_login(person, account):
    person.login(account.email, account.password)
    assert "/orgs/" in person.page.url, person.page.url


def test_members_tab_search_pages_ownership_invites_leave_and_password(people, gateway, tap):
    owner = gateway.signup(organization_name="Members Lab", name="Olga Owner")
    names = ["Mia Member", "Max Member", "Ada Admin"]
    joined = [join(gateway, tap, owner, "member", name=name) for name in names]
    pending = unique_email("pending")
    assert gateway.post(f"/organizations/{owner.org_id}/invites", {"emails": [pending], "role": "admin"},
                        owner.token).status_code == 201

    olga = people("members-owner")
    console_login(olga, owner)
    olga.goto(f"/orgs/{owner.org_id}/members?limit=3")
    pages = [[r.get_attribute("data-member") for r in olga.page.locator("tr[data-member]").all()]]
    with olga.page.expect_navigation():
        olga.page.get_by_role("link", name="Next page").click()
    pages.append([r.get_attribute("data-member") for r in olga.page.locator("tr[data-member]").all()])
    assert [len(p) for p in pages] == [3, 1] and olga.page.get_by_role("link", name="Next page").count() == 0
    assert set(pages[0] + pages[1]) == {owner.email} | {a.email for a in joined}
    # search
    olga.goto(f"/orgs/{owner.org_id}/members")
    olga.page.get_by_label("Search members").fill("Max")
    with olga.page.expect_navigation():
        olga.page.get_by_label("Search members").press("Enter")
    assert [r.get_attribute("data-member") for r in olga.page.locator("tr[data-member]").all()] == [joined[1].email]
    olga.check("members-search")

    # promote Ada to admin, then hand her the ownership
    olga.goto(f"/orgs/{owner.org_id}/members")
    row = olga.page.locator(f"tr[data-member='{joined[2].email}']")
    row.get_by_label("Role of Ada Admin").select_option("admin")
    with olga.page.expect_navigation():
        row.get_by_role("button", name="Change role of Ada Admin").click()
    assert olga.flash() == "The role is changed to Admin.", olga.page.locator("main").inner_text()
    row = olga.page.locator(f"tr[data-member='{joined[2].email}']")
    assert row.get_by_role("button", name="Make owner Ada Admin").count() == 1, olga.page.content()
    with olga.page.expect_navigation():
        row.get_by_role("button", name="Make owner Ada Admin").click()
    assert olga.flash() == "Ownership is transferred."
    assert "Owner" in olga.page.locator(f"tr[data-member='{joined[2].email}']").inner_text()
    assert olga.page.get_by_role("button", name=re.compile("Make owner")).count() == 0  # no longer the owner
    overview = gateway.get(f"/organizations/{owner.org_id}", joined[2].token)
    assert overview.status_code == 401  # her old token died with the change; the console's session renewed
    # revoke the pending invite
    invite_row = olga.page.locator(f"tr[data-invite='{pending}']")
    with olga.page.expect_navigation():
        invite_row.get_by_role("button", name=f"Revoke the invitation of {pending}").click()
    assert olga.flash() == "The invitation is revoked; its link no longer works."
    assert olga.page.locator(f"tr[data-invite='{pending}']").count() == 0

    # a member changes their password, then leaves
    mia = people("members-member")
    console_login(mia, joined[0])
    mia.goto("/account/password")
    mia.fill("Current password", "wrong password!")
    mia.fill("New password", "a brand new password")
    mia.fill("New password again", "a brand new password")
    mia.submit("Change password")
    assert mia.page.locator("#f-current_password-error").inner_text() == "This is not your current password."
    mia.check("password-error")
    mia.fill("Current password", PASSWORD)
    mia.fill("New password", "a brand new password")
    mia.fill("New password again", "a brand new password")
    mia.submit("Change password")
    assert mia.flash().startswith("Your password is changed.")
    assert gateway.post("/auth/login", {"email": mia_email(joined), "password": PASSWORD}).status_code == 401
    mia.goto(f"/orgs/{owner.org_id}/members")
    assert mia.page.get_by_role("button", name=re.compile("Remove|Change role|Revoke")).count() == 0
    mia.check("members-member")
    with mia.page.expect_navigation():
        mia.page.get_by_role("button", name="Leave organization").click()
    assert mia.page.url.endswith("/login")
    assert mia.flash().startswith("You left the organization.")
    members = gateway.get(f"/organizations/{owner.org_id}/members", joined[1].token).json()["items"]
    assert joined[0].email not in {m["email"] for m in members}


def mia_email(joined):
    return joined[0].email
