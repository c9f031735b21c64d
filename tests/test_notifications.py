"""Notification settings and mail, end to end: the real gateway, bus, database and SMTP sink.

Mail is read back from the sink's ``.eml`` files; events the usage service does not publish yet are
published here to the contract's exchange (``<source>.events``, routing key = event type).
"""
import uuid
from datetime import UTC, datetime, timedelta

import pymongo
import pytest
from kombu import Connection
from pymongo import ReturnDocument

from common import events, pages
from common.envelope import envelope
from common.events import make_event
from common.subscriptions import Subscription
from common.topology import event_exchange, queue_name, retry_delay_ms, retry_queue_name
from services.notifications import dispatch
from services.notifications.settings import NotificationsSettings
from stack import stack
from tests.support import Mailbox, assert_error, invite, join, new_team, superuser_token, unique_email, wait_until

MAIL_TIMEOUT = 20


# -- helpers -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mailbox(test_stack):
    return Mailbox(test_stack.mail_dir)


@pytest.fixture(scope="module")
def notifications_db(test_stack):
    client = pymongo.MongoClient(test_stack.mongo_url, tz_aware=True)
    yield client[test_stack.db_prefix + "notifications"]
    client.close()


def publish(test_stack, body, event):
    """Publish an event body as its source service would (with its envelope)."""
    source, event_type = event
    with Connection(test_stack.amqp_uri) as connection:
        producer = connection.Producer(serializer="json")
        producer.publish(body, exchange=event_exchange(source), routing_key=event_type,
                         declare=[event_exchange(source)], retry=True, **envelope(source, event_type, body))
    return body


def emit(test_stack, event, org_id, **payload):
    _, _, body = make_event(event, org_id, **payload)
    return publish(test_stack, body, event)


def set_plan(gateway, org_id, name="team", users=None, storage=None, paid_until=None):
    plan = {"name": name, "included_users": users, "included_storage_bytes": storage,
            "paid_until": paid_until.isoformat() if paid_until else None}
    response = gateway.request("PUT", f"/organizations/{org_id}/plan", superuser_token(gateway), json=plan)
    assert response.status_code == 200, response.text


def settings_path(org_id, suffix=""):
    return f"/organizations/{org_id}/notifications{suffix}"


def put_settings(gateway, admin, plan_email=None, new_user_email=None, ai_job_recipients="initiator"):
    response = gateway.request("PUT", settings_path(admin.org_id), admin.token, json={
        "plan_email": plan_email, "new_user_email": new_user_email, "ai_job_recipients": ai_job_recipients})
    assert response.status_code == 200, response.text
    return response.json()


def deliveries(gateway, admin, **match):
    items = gateway.get(settings_path(admin.org_id, "/deliveries?limit=200"), admin.token).json()["items"]
    return [d for d in items if all(d[k] == v if k != "subject" else v in d["subject"] for k, v in match.items())]


def moment(text):
    """A timestamp of the API (ISO 8601, 'Z') as an aware datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def settled(gateway, admin):
    """Barrier: none of the organization's mail is still queued."""
    return wait_until(lambda: all(d["status"] != "queued" for d in deliveries(gateway, admin)), what="mail settled")


def known_to_notifications(notifications_db, org_id, user_ids=()):
    """Barrier: the service has applied the organization's (and these members') events."""
    org = notifications_db.organizations.find_one({"_id": org_id})
    if not org or not org.get("owner_email"):
        return False
    return all(notifications_db.members.find_one({"_id": f"{org_id}:{u}"}) for u in user_ids)


@pytest.fixture
def team(gateway, tap, notifications_db, mailbox):
    """An organization with owner, admin, dataset manager and member, plus another org's admin."""
    members = new_team(gateway, tap, f"Notif Lab {uuid.uuid4().hex[:6]}", unique_email("owner"))
    owner = members["owner"]
    wait_until(lambda: known_to_notifications(notifications_db, owner.org_id,
                                              [members[r].user_id for r in ("admin", "dataset_manager", "member")]),
               what="notifications to know the team")
    return members


# -- settings --------------------------------------------------------------------------------

def test_settings_defaults_update_and_validation(gateway, owner, mailbox):
    path = settings_path(owner.org_id)
    assert gateway.get(path, owner.token).json() == {"plan_email": None, "new_user_email": None,
                                                     "ai_job_recipients": "initiator"}
    billing = unique_email("billing")
    saved = put_settings(gateway, owner, plan_email=billing.upper(), ai_job_recipients="admins")
    assert saved == {"plan_email": billing, "new_user_email": None, "ai_job_recipients": "admins"}
    assert gateway.get(path, owner.token).json() == saved
    valid = {"plan_email": None, "new_user_email": None, "ai_job_recipients": "initiator"}
    bad = [
        (dict(valid, extra=1), "extra"),
        (dict(valid, plan_email="Billing <billing@example.test>"), "plan_email"),
        (dict(valid, plan_email="a@example.test, b@example.test"), "plan_email"),
        (dict(valid, plan_email="a@example.test\r\nBcc: victim@example.test"), "plan_email"),
        (dict(valid, new_user_email="a@example.test\nBcc: victim@example.test"), "new_user_email"),
        (dict(valid, new_user_email="not-an-address"), "new_user_email"),
        (dict(valid, ai_job_recipients="everyone"), "ai_job_recipients"),
        ({"plan_email": None, "new_user_email": None}, "ai_job_recipients"),
    ]
    for body, field in bad:
        error = assert_error(gateway.request("PUT", path, owner.token, json=body), 422, "validation_failed")
        assert field in error["details"], (body, error)
    assert gateway.get(path, owner.token).json() == saved  # nothing of the rejected bodies stuck


def test_settings_are_admin_only_and_isolated_per_organization(gateway, team):
    owner, outsider = team["owner"], team["outsider"]
    put_settings(gateway, owner, plan_email=unique_email("team-billing"))
    for who in ("owner", "admin"):
        assert gateway.get(settings_path(owner.org_id), team[who].token).status_code == 200
        assert gateway.get(settings_path(owner.org_id, "/deliveries"), team[who].token).status_code == 200
    body = {"plan_email": unique_email("evil"), "new_user_email": None, "ai_job_recipients": "admins"}
    for who in ("dataset_manager", "member"):
        assert_error(gateway.get(settings_path(owner.org_id), team[who].token), 403, "forbidden")
        assert_error(gateway.request("PUT", settings_path(owner.org_id), team[who].token, json=body), 403)
        assert_error(gateway.get(settings_path(owner.org_id, "/deliveries"), team[who].token), 403)
    # another organization's admin: 403 on this org's settings and log, whatever they try
    assert_error(gateway.get(settings_path(owner.org_id), outsider.token), 403, "wrong_organization")
    assert_error(gateway.request("PUT", settings_path(owner.org_id), outsider.token, json=body), 403)
    assert_error(gateway.get(settings_path(owner.org_id, "/deliveries"), outsider.token), 403)
    assert_error(gateway.get(settings_path(owner.org_id)), 401, "unauthorized")
    # the outsider's own settings are separate from the team's
    put_settings(gateway, outsider, plan_email=unique_email("outsider-billing"), ai_job_recipients="admins")
    team_settings = gateway.get(settings_path(owner.org_id), owner.token).json()
    assert team_settings["plan_email"].startswith("team-billing") and team_settings["ai_job_recipients"] == "initiator"
    assert gateway.get(settings_path(outsider.org_id), outsider.token).json()["plan_email"].startswith(
        "outsider-billing")


# -- each trigger ---------------------------------------------------------------------------

def test_invite_mail_reaches_the_invitee_with_link_and_expiry(gateway, tap, team, mailbox):
    email_address = unique_email("invitee")
    token, invite_id = invite(gateway, tap, team["admin"], email_address, role="dataset_manager")
    [mail] = mailbox.wait(email_address)
    org_name = gateway.get(f'/organizations/{team["owner"].org_id}', team["owner"].token).json()["name"]
    assert mail.rcpt_to == [email_address] and mail.message["To"] == email_address
    assert org_name in mail.subject and org_name in mail.text and org_name in mail.html
    assert "admin person" in mail.text and "dataset_manager" in mail.text
    assert f"/invites/{token}" in mail.text and 'href="' in mail.html and token in mail.html
    event = tap.wait_for("invite_created", invite_id=invite_id)
    assert event["expires_at"][:10] in mail.text
    # the log is written right after the SMTP server's answer, so it may trail the sink by a moment
    [logged] = wait_until(lambda: [d for d in deliveries(gateway, team["admin"], kind="invite", to=email_address)
                                   if d["status"] != "queued"], what="delivery logged")
    assert logged["status"] == "sent" and logged["attempts"] == 1 and logged["sent_at"]
    assert [a["outcome"] for a in logged["attempt_log"]] == ["sent"]


def test_member_joined_mail_goes_to_owner_then_to_new_user_email(gateway, tap, team, mailbox):
    owner = team["owner"]
    first = join(gateway, tap, owner, "member", name="Jonas Joiner")
    [mail] = mailbox.wait(owner.email, contains="Jonas Joiner")
    assert "Jonas Joiner" in mail.subject and first.email in mail.text and "member" in mail.text
    hr = unique_email("hr")
    put_settings(gateway, owner, new_user_email=hr)
    join(gateway, tap, owner, "admin", name="Second Joiner")
    [mail] = mailbox.wait(hr, contains="Second Joiner")
    assert mail.rcpt_to == [hr] and "admin" in mail.text
    assert mailbox.to(owner.email, contains="Second Joiner") == []
    # the founder joining their own new organization is not announced to anyone
    founder = gateway.signup(organization_name="Fresh Lab", email=unique_email("founder"), name="Frida Founder")
    join(gateway, tap, founder, "member", name="Fresh Member")
    mailbox.wait(founder.email, contains="Fresh Member")
    assert mailbox.to(founder.email, contains="Frida Founder") == []


def test_plan_changed_and_member_limit_mail_once_per_crossing(gateway, team, mailbox, notifications_db):
    owner, org_id = team["owner"], team["owner"].org_id
    set_plan(gateway, org_id, name="team", users=3)  # four members: one over the limit
    [changed] = mailbox.wait(owner.email, contains="plan changed to team")
    assert "custom -> team" in changed.text and "custom" in changed.html
    [limit] = mailbox.wait(owner.email, contains="member limit exceeded")
    assert "4 members" in limit.text and "3 members" in limit.text and "1 members" in limit.text
    # still over the limit on the next plan change: no second limit mail; plan mail to plan_email
    billing = unique_email("billing")
    put_settings(gateway, owner, plan_email=billing)
    set_plan(gateway, org_id, name="power", users=2)
    [changed] = mailbox.wait(billing, contains="plan changed to power")
    assert "team -> power" in changed.text
    assert mailbox.to(owner.email, contains="plan changed to power") == []
    # back under the limit, then over again: a new crossing, a new mail (to plan_email now)
    set_plan(gateway, org_id, name="power", users=10)
    mailbox.wait(billing, contains="plan changed to power", count=2)
    wait_until(lambda: notifications_db.organizations.find_one({"_id": org_id}).get("members_exceeded") is False,
               what="limit re-armed")
    set_plan(gateway, org_id, name="team", users=1)
    mailbox.wait(billing, contains="member limit exceeded")
    assert len(mailbox.to(owner.email, contains="member limit exceeded")) == 1
    assert len(mailbox.to(billing, contains="member limit exceeded")) == 1


def test_storage_limit_mail_once_per_crossing(gateway, team, mailbox, notifications_db, test_stack):
    owner, org_id = team["owner"], team["owner"].org_id
    set_plan(gateway, org_id, name="team", storage=1_000_000)
    mailbox.wait(owner.email, contains="plan changed to team")

    def report(used):
        body = emit(test_stack, events.STORAGE_UPDATED, org_id, used_bytes=used, datasets=1)
        wait_until(lambda: notifications_db.organizations.find_one({"_id": org_id}).get("storage_as_of")
                   == body["occurred_at"], what=f"storage report {used} applied")
        return body

    report(500_000)
    report(1_500_000)  # crossing
    [mail] = mailbox.wait(owner.email, contains="storage limit exceeded")
    assert "1.5 MB" in mail.text and "500000 bytes" in mail.text
    report(2_000_000)  # still over: no mail
    report(900_000)  # back under
    report(1_200_000)  # crossing again
    mailbox.wait(owner.email, contains="storage limit exceeded", count=2)
    mails = mailbox.to(owner.email, contains="storage limit exceeded")
    assert len(mails) == 2 and "200000 bytes" in mails[1].text
    assert len(deliveries(gateway, owner, kind="storage_limit_exceeded")) == 2


@pytest.mark.parametrize("mode,expected", [("initiator", ("dataset_manager",)),
                                           ("initiator_and_admins", ("dataset_manager", "owner", "admin")),
                                           ("admins", ("owner", "admin"))])
def test_ai_job_mail_recipients(gateway, team, mailbox, test_stack, mode, expected):
    owner = team["owner"]
    put_settings(gateway, owner, ai_job_recipients=mode)
    job_type = f"summarize-{uuid.uuid4().hex[:8]}"
    emit(test_stack, events.AI_JOB_COMPLETED, owner.org_id, job_id="job-1", job_type=job_type,
         initiator_user_id=team["dataset_manager"].user_id, outcome="succeeded", credits=1500)
    want = sorted(team[who].email for who in expected)
    for address in want:
        [mail] = mailbox.wait(address, contains=job_type)
        assert "succeeded" in mail.subject and "1500" in mail.text and "dataset_manager person" in mail.text
    assert sorted(d["to"] for d in deliveries(gateway, owner, kind="ai_job_completed", subject=job_type)) == want
    assert mailbox.recipients(job_type) == want


def test_plan_reminders_before_and_after_paid_until_once_each(gateway, team, mailbox, notifications_db):
    owner, admin, org_id = team["owner"], team["admin"], team["owner"].org_id
    paid_until = datetime.now(UTC) + timedelta(seconds=6)
    set_plan(gateway, org_id, name="team", paid_until=paid_until)
    for account in (owner, admin):  # no plan_email: owner and admins
        [mail] = mailbox.wait(account.email, contains="plan ends on")
        assert paid_until.strftime("%Y-%m-%d") in mail.text
    [expired] = mailbox.wait(owner.email, contains="has expired", timeout=30)
    mailbox.wait(admin.email, contains="has expired")
    wait_until(lambda: notifications_db.organizations.find_one({"_id": org_id}).get("reminder_due_at", 1) is None,
               what="reminder schedule finished")
    # the same paid_until again (other limits): no reminder is repeated
    set_plan(gateway, org_id, name="power", paid_until=paid_until)
    mailbox.wait(owner.email, contains="plan changed to power")
    assert len(mailbox.to(owner.email, contains="plan ends on")) == 1
    assert len(mailbox.to(owner.email, contains="has expired")) == 1
    assert mailbox.to(team["member"].email, contains="plan ends on") == []
    # a new paid_until well ahead: the 6-week reminder goes out at once, to plan_email only now
    billing = unique_email("billing")
    put_settings(gateway, owner, plan_email=billing)
    set_plan(gateway, org_id, name="power", paid_until=paid_until + timedelta(days=30))
    mailbox.wait(billing, contains="plan ends on")
    assert len(mailbox.to(owner.email, contains="plan ends on")) == 1
    kinds = [d["kind"] for d in deliveries(gateway, owner, to=owner.email)]
    assert kinds.count("plan_expiring") == 1 and kinds.count("plan_expired") == 1


def test_deletion_requested_mail_goes_to_the_owner(gateway, mailbox, test_stack, notifications_db):
    owner = gateway.signup(organization_name="Doomed Mail Lab", email=unique_email("doomed"))
    wait_until(lambda: known_to_notifications(notifications_db, owner.org_id), what="org known")
    emit(test_stack, events.ORGANIZATION_DELETION_REQUESTED, owner.org_id, name="Doomed Mail Lab",
         requested_by=owner.user_id, owner_email=owner.email)
    [mail] = mailbox.wait(owner.email, contains="is being deleted")
    assert "Doomed Mail Lab" in mail.subject and "removed permanently" in mail.text


# -- the service's own copy of the members, fed by the real membership events ---------------------

def member_doc(notifications_db, org_id, user_id):
    return notifications_db.members.find_one({"_id": f"{org_id}:{user_id}"}) or {}


def job_mail_recipients(gateway, admin, test_stack, mailbox, initiator, expected):
    """Emit an ai_job_completed; once the expected mail arrived, the recipients it was recorded for."""
    job_type = f"job-{uuid.uuid4().hex[:8]}"
    emit(test_stack, events.AI_JOB_COMPLETED, admin.org_id, job_id="j-" + job_type, job_type=job_type,
         initiator_user_id=initiator.user_id, outcome="succeeded", credits=10)
    for address in expected:
        mailbox.wait(address, contains=job_type)
    # all of one event's mail is recorded before any of it is sent: the log is the full list
    return sorted(d["to"] for d in deliveries(gateway, admin, kind="ai_job_completed", subject=job_type))


def test_promoted_admin_gets_admin_mail_and_a_removed_admin_no_longer_does(gateway, team, mailbox, test_stack,
                                                                         notifications_db):
    owner, admin, member, manager = team["owner"], team["admin"], team["member"], team["dataset_manager"]
    org_id = owner.org_id
    put_settings(gateway, owner, ai_job_recipients="admins")
    response = gateway.patch(f"/organizations/{org_id}/members/{member.user_id}", {"role": "admin"},
                             owner.token)
    assert response.status_code == 200, response.text
    wait_until(lambda: member_doc(notifications_db, org_id, member.user_id).get("role") == "admin",
               what="member_role_changed applied")
    everyone = sorted([owner.email, admin.email, member.email])
    assert job_mail_recipients(gateway, owner, test_stack, mailbox, manager, everyone) == everyone
    response = gateway.delete(f"/organizations/{org_id}/members/{admin.user_id}", token=owner.token)
    assert response.status_code == 200, response.text
    wait_until(lambda: member_doc(notifications_db, org_id, admin.user_id).get("left") is True,
               what="member_left applied")
    remaining = sorted([owner.email, member.email])
    assert job_mail_recipients(gateway, owner, test_stack, mailbox, manager, remaining) == remaining


def test_after_an_ownership_transfer_the_new_owner_gets_member_joined_mail(gateway, tap, team, mailbox,
                                                                            notifications_db):
    owner, admin, org_id = team["owner"], team["admin"], team["owner"].org_id
    response = gateway.post(f"/organizations/{org_id}/ownership", {"user_id": admin.user_id}, owner.token)
    assert response.status_code == 200, response.text
    wait_until(lambda: (notifications_db.organizations.find_one({"_id": org_id}) or {}).get("owner_email")
               == admin.email, what="ownership_transferred applied")
    # the transfer revoked both tokens: the new owner logs in again to invite
    login = gateway.post("/auth/login", {"email": admin.email, "password": admin.password,
                                         "organization_id": org_id})
    assert login.status_code == 200, login.text
    admin.token = login.json()["access_token"]
    join(gateway, tap, admin, "member", name="Nora Newcomer")
    [mail] = mailbox.wait(admin.email, contains="Nora Newcomer")
    assert mail.rcpt_to == [admin.email]
    assert [d["to"] for d in deliveries(gateway, admin, kind="member_joined", subject="Nora Newcomer")] == [admin.email]
    assert mailbox.to(owner.email, contains="Nora Newcomer") == []


# -- real chains: the usage service's events, caused through the gateway ---------------------------

def test_a_settled_reservation_mails_the_job_completion(gateway, team, mailbox):
    owner, manager, org_id = team["owner"], team["dataset_manager"], team["owner"].org_id
    su = superuser_token(gateway)
    put_settings(gateway, owner, ai_job_recipients="initiator_and_admins")
    granted = gateway.post(f"/organizations/{org_id}/credits/grants",
                           {"amount": 10_000, "idempotency_key": uuid.uuid4().hex}, su)
    assert granted.status_code == 201, granted.text
    want = sorted([manager.email, owner.email, team["admin"].email])
    for outcome, amount, words in (("succeeded", 1_200, "spent"), ("failed", 700, "refunded")):
        job_type = f"embed-{uuid.uuid4().hex[:8]}"
        reserved = gateway.post(f"/organizations/{org_id}/credits/reservations", {
            "amount": amount, "job_id": f"job-{job_type}", "job_type": job_type,
            "idempotency_key": uuid.uuid4().hex}, manager.token)
        assert reserved.status_code == 201, reserved.text
        reservation_id = reserved.json()["entry"]["id"]
        settle = gateway.post(f"/organizations/{org_id}/credits/reservations/{reservation_id}/settle",
                              {"outcome": outcome}, su)
        assert settle.status_code == 200, settle.text
        for address in want:
            [mail] = mailbox.wait(address, contains=job_type)
            assert outcome in mail.subject and f"job-{job_type}" in mail.text
            assert f"Credits {words}: {amount} milli-credits" in mail.text
            assert "dataset_manager person" in mail.text  # the initiator, from the reservation's actor
        assert sorted(d["to"] for d in deliveries(gateway, owner, kind="ai_job_completed", subject=job_type)) == want


def test_a_real_storage_report_over_the_limit_mails_plan_email(gateway, tap, team, mailbox, notifications_db):
    owner, org_id = team["owner"], team["owner"].org_id
    su = superuser_token(gateway)
    billing = unique_email("storage-billing")
    put_settings(gateway, owner, plan_email=billing)
    set_plan(gateway, org_id, name="team", storage=1_000)
    mailbox.wait(billing, contains="plan changed to team")

    def report(size):
        response = gateway.post(f"/organizations/{org_id}/storage-reports",
                                {"datasets": [{"dataset_id": "big", "bytes": size}], "complete": True}, su)
        assert response.status_code == 201, response.text
        event = tap.wait_for("storage_updated", organization_id=org_id, used_bytes=size)
        wait_until(lambda: notifications_db.organizations.find_one({"_id": org_id}).get("storage_as_of")
                   == event["occurred_at"], what=f"storage report {size} applied")

    report(1_500)
    [mail] = mailbox.wait(billing, contains="storage limit exceeded")
    assert "1.5 KB" in mail.text and "500 bytes" in mail.text and mail.rcpt_to == [billing]
    report(2_500)  # still over: not mailed again
    assert [d["to"] for d in deliveries(gateway, owner, kind="storage_limit_exceeded")] == [billing]
    assert len(mailbox.to(billing, contains="storage limit exceeded")) == 1
    assert mailbox.to(owner.email, contains="storage limit exceeded") == []


def test_job_fields_with_control_characters_are_refused_at_the_gateway(gateway, team):
    """job_id and job_type end up in the completion mail's subject: one line each, or a 422."""
    path = f'/organizations/{team["owner"].org_id}/credits/reservations'
    valid = {"amount": 1, "job_id": "job-1", "job_type": "segmentation", "idempotency_key": uuid.uuid4().hex}
    for field, value in (("job_type", "seg\r\nBcc: victim@example.test"), ("job_type", "seg\n"),
                         ("job_id", "job\rX-Injected: yes"), ("job_id", "job\x00"), ("job_type", "a\tb"),
                         ("job_type", "a\u2028b"), ("job_id", "a\x85b")):
        body = dict(valid, **{field: value}, idempotency_key=uuid.uuid4().hex)
        error = assert_error(gateway.post(path, body, team["dataset_manager"].token), 422, "validation_failed")
        assert set(error["details"]) == {field}, (value, error)
    # a plain job still gets through to the usage service (no credits: 402 there, not a 422 here)
    assert_error(gateway.post(path, valid, team["dataset_manager"].token), 402, "insufficient_credits")


# -- reliability -------------------------------------------------------------------------------

def test_smtp_outage_every_queued_mail_delivered_exactly_once(gateway, tap, team, mailbox, test_stack):
    admin = team["admin"]
    invitees = [unique_email("outage") for _ in range(3)]
    settled(gateway, admin)  # nothing in flight when the sink goes away
    sink = stack._pid_file(test_stack, "smtp")
    assert stack.stop_pid_file(sink)
    try:
        for address in invitees:
            invite(gateway, tap, admin, address)

        def failing_twice():
            logged = [d for d in deliveries(gateway, admin, kind="invite") if d["to"] in invitees]
            return len(logged) == 3 and all(d["attempts"] >= 2 and d["status"] == "queued" for d in logged) and logged
        for delivery in wait_until(failing_twice, timeout=20, what="failed attempts while SMTP is down"):
            assert delivery["last_error"] and all(a["outcome"] == "temporary_failure" for a in delivery["attempt_log"])
    finally:
        stack.start_smtp_sink(test_stack)
    for address in invitees:
        mailbox.wait(address)

    def all_sent():
        logged = [d for d in deliveries(gateway, admin, kind="invite") if d["to"] in invitees]
        return len(logged) == 3 and all(d["status"] == "sent" for d in logged) and logged
    for delivery in wait_until(all_sent, what="all sent"):
        log = delivery["attempt_log"]
        assert delivery["attempts"] == len(log) >= 3
        assert [a["outcome"] for a in log] == ["temporary_failure"] * (len(log) - 1) + ["sent"]
        assert delivery["sent_at"] and delivery["last_error"]  # the last failure stays visible
    # a later mail goes through, and none of the outage mail was sent twice
    marker = unique_email("after-outage")
    invite(gateway, tap, admin, marker)
    mailbox.wait(marker)
    for address in invitees:
        assert len(mailbox.to(address)) == 1


def test_smtp_down_too_long_marks_mail_failed(gateway, tap, team, mailbox, test_stack):
    admin = team["admin"]
    address = unique_email("given-up")
    settled(gateway, admin)
    sink = stack._pid_file(test_stack, "smtp")
    assert stack.stop_pid_file(sink)
    try:
        invite(gateway, tap, admin, address)
        [failed] = wait_until(lambda: [d for d in deliveries(gateway, admin, to=address) if d["status"] == "failed"],
                              timeout=40, what="delivery given up")
        # what the service runs with
        policy = dispatch.DispatchPolicy.from_settings(NotificationsSettings.from_file(test_stack.service_env()))
        assert failed["attempts"] == policy.max_attempts == len(failed["attempt_log"])
        assert "refused" in failed["last_error"].lower() and failed["sent_at"] is None
        # each retry waited at least the policy's backoff (base, 2*base, ... capped); 0.8: clock slack
        times = [moment(a["at"]) for a in failed["attempt_log"]]
        gaps = [(later - earlier).total_seconds() for earlier, later in zip(times, times[1:], strict=False)]
        expected = [policy.backoff(n) for n in range(1, len(times))]
        assert expected[-1] > expected[0]  # the test stack's policy does grow
        assert all(gap >= 0.8 * want for gap, want in zip(gaps, expected, strict=False)), (gaps, expected)
    finally:
        stack.start_smtp_sink(test_stack)
    marker = unique_email("after-give-up")
    invite(gateway, tap, admin, marker)
    mailbox.wait(marker)
    assert mailbox.to(address) == []


def to_notifications(test_stack, event, body, headers=None):
    """Deliver an event to the notifications service's queue only (the other subscribers of the
    type never see this made-up organization)."""
    queue = queue_name(Subscription(event, "notifications", "on_" + event[1]))
    with Connection(test_stack.amqp_uri) as connection:
        connection.Producer(serializer="json").publish(body, exchange="", routing_key=queue, retry=True,
                                                       headers=headers or {})
    return queue


def waiting_on(test_stack, queue):
    """How many messages ``queue`` holds (a passive declare: exact, unlike the management stats)."""
    with Connection(test_stack.amqp_uri) as connection:
        return connection.default_channel.queue_declare(queue, passive=True).message_count


def test_an_event_whose_handler_fails_is_retried_not_lost(test_stack, mailbox, notifications_db):
    """member_joined before its organization is known: the handler raises (no owner to mail), the
    event waits on the retry queue and comes back; once organization_created arrived, the join is
    mailed -- once."""
    org_id, owner_email = uuid.uuid4().hex, unique_email("late-owner")
    _, _, joined = make_event(events.MEMBER_JOINED, org_id, user_id=uuid.uuid4().hex, email=unique_email("early"),
                              name="Early Eddie", role="member", via_invite=True, is_owner=False)
    to_notifications(test_stack, events.MEMBER_JOINED, joined)
    # the handler ran (it stores the member before it looks for the owner) and failed ...
    wait_until(lambda: notifications_db.members.find_one({"_id": f'{org_id}:{joined["user_id"]}'}),
               what="the member_joined handler to run")
    # ... and handed the event to the retry queue instead of acking it away
    first_retry = retry_queue_name("notifications", retry_delay_ms(1))
    wait_until(lambda: waiting_on(test_stack, first_retry) > 0, what="the event on the retry queue")
    assert notifications_db.deliveries.count_documents({"org_id": org_id}) == 0
    _, _, created = make_event(events.ORGANIZATION_CREATED, org_id, name="Late Lab", owner_user_id=uuid.uuid4().hex,
                               owner_email=owner_email, owner_name="Lena Late")
    to_notifications(test_stack, events.ORGANIZATION_CREATED, created)
    [mail] = mailbox.wait(owner_email, contains="Early Eddie")
    assert "Late Lab" in mail.subject
    # exactly once: a later join of the same organization is mailed, the early one not again
    _, _, later = make_event(events.MEMBER_JOINED, org_id, user_id=uuid.uuid4().hex, email=unique_email("later"),
                             name="Later Lou", role="member", via_invite=True, is_owner=False)
    to_notifications(test_stack, events.MEMBER_JOINED, later)
    mailbox.wait(owner_email, contains="Later Lou")
    assert len(mailbox.to(owner_email, contains="Early Eddie")) == 1
    assert notifications_db.deliveries.count_documents({"org_id": org_id, "kind": "member_joined"}) == 2


def test_same_event_twice_sends_one_mail(gateway, team, mailbox, test_stack):
    owner = team["owner"]
    put_settings(gateway, owner, ai_job_recipients="initiator")
    job_type = f"dup-{uuid.uuid4().hex[:8]}"
    _, _, body = make_event(events.AI_JOB_COMPLETED, owner.org_id, job_id="job-dup", job_type=job_type,
                            initiator_user_id=team["member"].user_id, outcome="failed", credits=0)
    publish(test_stack, body, events.AI_JOB_COMPLETED)
    mailbox.wait(team["member"].email, contains=job_type)
    publish(test_stack, body, events.AI_JOB_COMPLETED)  # redelivered: same event id
    later = f"later-{uuid.uuid4().hex[:8]}"
    emit(test_stack, events.AI_JOB_COMPLETED, owner.org_id, job_id="job-later", job_type=later,
         initiator_user_id=team["member"].user_id, outcome="succeeded", credits=5)
    mailbox.wait(team["member"].email, contains=later)
    assert len(mailbox.to(team["member"].email, contains=job_type)) == 1
    assert len(deliveries(gateway, owner, subject=job_type)) == 1


def test_header_injection_is_rejected_or_neutralised(gateway, team, mailbox, test_stack, notifications_db):
    owner, org_id = team["owner"], team["owner"].org_id
    victim = unique_email("victim")
    # through the API: names and addresses with line breaks are refused
    assert_error(gateway.patch(f"/organizations/{org_id}", {"name": f"Lab\r\nBcc: {victim}"}, owner.token),
                 422, "validation_failed")
    assert gateway.post("/auth/signup", {"email": unique_email(), "password": "correct horse battery",
                                         "name": f"Eve\r\nBcc: {victim}"}).status_code == 422
    # on the bus (another publisher's bug): neutralised in every header
    invitee = unique_email("target")
    emit(test_stack, events.INVITE_CREATED, org_id, invite_id=uuid.uuid4().hex, email=invitee, role="member",
         inviter_name=f"Mallory\r\nBcc: {victim}\r\nX-Injected: yes",
         accept_url="http://127.0.0.1:8080/invites/abc", expires_at="2030-01-01T00:00:00.000Z",
         organization_name=f"Evil Org\r\nBcc: {victim}\nX-Injected: yes")
    emit(test_stack, events.INVITE_CREATED, org_id, invite_id=uuid.uuid4().hex,
         email=f'{unique_email("bad")}\r\nBcc: {victim}', role="member", inviter_name="Mallory",
         accept_url="http://127.0.0.1:8080/invites/abc", expires_at="2030-01-01T00:00:00.000Z")
    joiner = uuid.uuid4().hex
    emit(test_stack, events.MEMBER_JOINED, org_id, user_id=joiner, email=unique_email("joiner"),
         name=f"Joe\r\nBcc: {victim}\r\nX-Injected: yes", role="member", via_invite=True, is_owner=False)
    [invite_mail] = mailbox.wait(invitee)
    [joined_mail] = mailbox.wait(owner.email, contains="Joe")
    for mail in (invite_mail, joined_mail):
        assert mail.message["Bcc"] is None and mail.message["X-Injected"] is None
        assert victim not in mail.rcpt_to and len(mail.rcpt_to) == 1
        header_block = mail.raw.split(b"\r\n\r\n", 1)[0]
        assert b"\r\nBcc:" not in header_block and b"\nX-Injected" not in header_block
        assert all(not line.startswith((b"Bcc:", b"X-Injected:")) for line in mail.raw.splitlines())
        assert "\n" not in mail.subject and "\r" not in mail.subject
    assert "Evil Org Bcc:" in invite_mail.subject  # folded into one line, not a header
    assert "Mallory Bcc:" in invite_mail.text
    assert mailbox.to(victim) == []
    # the address with a line break is not mailed at all
    assert [m for m in mailbox.all() if any(r.startswith("bad-") for r in m.rcpt_to)] == []
    assert not notifications_db.deliveries.find_one({"to": {"$regex": "victim"}})


def test_delivery_log_pages_newest_first(gateway, tap, owner, mailbox):
    for _ in range(3):
        invite(gateway, tap, owner, unique_email("page"))
    path = settings_path(owner.org_id, "/deliveries")
    full = wait_until(lambda: (lambda items: len(items) >= 3 and items)(
        gateway.get(path + "?limit=200", owner.token).json()["items"]), what="three deliveries")
    assert [d["created_at"] for d in full] == sorted((d["created_at"] for d in full), reverse=True)
    seen, cursor = [], None
    while True:
        page = gateway.get(path + "?limit=1" + (f"&cursor={cursor}" if cursor else ""), owner.token)
        assert page.status_code == 200, page.text
        seen += page.json()["items"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert [d["id"] for d in seen] == [d["id"] for d in full]
    assert set(full[0]) >= {"id", "kind", "to", "subject", "status", "attempts", "last_error", "created_at",
                            "sent_at"}
    assert_error(gateway.get(path + "?cursor=garbage", owner.token), 422, "validation_failed")
    assert_error(gateway.get(path + "?limit=0", owner.token), 422, "validation_failed")


# -- the recorded-then-sent path under crashes and bursts -----------------------------------------

def crashed_entry(org_id, to, due_at, text, notifications_db):
    """A mail as a handler that crashed right after recording it leaves it: queued (numbered in
    the organization's log, as the recording does), leased to a process that is gone until ``due_at``."""
    now = datetime.now(UTC)
    delivery_id = f"crash-{uuid.uuid4().hex}:member_joined:{to}"
    ordinal = notifications_db.delivery_counters.find_one_and_update(
        {"_id": org_id}, {"$inc": {"deliveries": 1}}, upsert=True, return_document=ReturnDocument.AFTER)["deliveries"]
    return {"_id": delivery_id, "org_id": org_id, "kind": "member_joined", "to": to,
            "subject": "Crash Test joined", "created_at": now, "text": text, "html": f"<p>{text}</p>",
            "sealed": False, "attempts": 0, "due_at": due_at, "lease_id": uuid.uuid4().hex,
            "ordinal": ordinal, "pk": pages.key(org_id, ordinal)}


def test_mail_left_leased_by_a_crash_is_sent_once_after_its_lease(gateway, team, mailbox, notifications_db):
    owner = team["owner"]
    now = datetime.now(UTC)
    expired = crashed_entry(owner.org_id, unique_email("crash-expired"), now - timedelta(seconds=1), "expired lease",
                             notifications_db)
    running = crashed_entry(owner.org_id, unique_email("crash-running"), now + timedelta(seconds=3), "running lease",
                             notifications_db)
    for entry in (expired, running):  # the handler got as far as the queue entry and the log entry
        notifications_db.mail_queue.insert_one(entry)
        notifications_db.deliveries.insert_one({k: entry[k] for k in ("_id", "org_id", "kind", "to", "subject",
                                                                       "created_at", "ordinal", "pk")})
    # a crash between the queue entry and the log entry: the dispatcher logs it as it sends it
    unlogged = crashed_entry(owner.org_id, unique_email("crash-unlogged"), now - timedelta(seconds=1), "unlogged",
                             notifications_db)
    notifications_db.mail_queue.insert_one(unlogged)
    for entry in (expired, running, unlogged):
        [mail] = mailbox.wait(entry["to"])
        assert entry["text"] in mail.text and mail.message["X-Delivery-Id"] == entry["_id"]
    logged = {d["id"]: d for d in wait_until(
        lambda: (lambda items: len(items) == 3 and all(d["status"] == "sent" for d in items) and items)(
            [d for d in deliveries(gateway, owner) if d["id"].startswith("crash-")]), what="crash mail logged")}
    assert all(d["attempts"] == 1 for d in logged.values())
    sent_at = datetime.fromisoformat(logged[running["_id"]]["sent_at"].replace("Z", "+00:00"))
    assert sent_at >= running["due_at"] - timedelta(milliseconds=1)  # not before its lease ran out
    wait_until(lambda: notifications_db.mail_queue.count_documents(
        {"_id": {"$in": [expired["_id"], running["_id"], unlogged["_id"]]}}) == 0, what="queue entries removed")
    for entry in (expired, running, unlogged):
        assert len(mailbox.to(entry["to"])) == 1


def test_a_queue_entry_of_a_finished_mail_is_dropped_not_resent(gateway, team, mailbox, notifications_db, test_stack):
    owner = team["owner"]
    joiner = emit(test_stack, events.MEMBER_JOINED, owner.org_id, user_id=uuid.uuid4().hex,
                  email=unique_email("finished"), name="Finished Fiona", role="member", via_invite=True,
                  is_owner=False)
    mailbox.wait(owner.email, contains="Finished Fiona")
    delivery_id = f'{joiner["event_id"]}:member_joined:{owner.email}'
    wait_until(lambda: [d for d in deliveries(gateway, owner) if d["id"] == delivery_id and d["status"] == "sent"],
               what="the mail logged as sent")
    # the same event again: its mail is recorded and sent already, so nothing happens
    publish(test_stack, joiner, events.MEMBER_JOINED)
    marker = emit(test_stack, events.MEMBER_JOINED, owner.org_id, user_id=uuid.uuid4().hex,
                  email=unique_email("marker"), name="Marker Mo", role="member", via_invite=True, is_owner=False)
    mailbox.wait(owner.email, contains="Marker Mo")
    assert marker and len(mailbox.to(owner.email, contains="Finished Fiona")) == 1
    assert notifications_db.mail_queue.find_one({"_id": delivery_id}) is None
    [logged] = [d for d in deliveries(gateway, owner) if d["id"] == delivery_id]
    assert logged["attempts"] == 1 and logged["status"] == "sent"


def test_a_burst_of_joins_sends_each_mail_once(gateway, owner, mailbox, notifications_db, test_stack):
    """Many events at once share their database commands (group commit); each still gets its own
    mail exactly once, redeliveries inside the burst included, and every fact is applied."""
    wait_until(lambda: known_to_notifications(notifications_db, owner.org_id), what="org known")
    tag = uuid.uuid4().hex[:8]
    bodies, started = [], datetime.now(UTC)
    for index in range(60):
        _, _, body = make_event(events.MEMBER_JOINED, owner.org_id, user_id=f"burst-{tag}-{index}",
                                email=unique_email("burst"), name=f"Burst {tag} {index}", role="member",
                                via_invite=True, is_owner=False, member_count=index + 2)
        body["occurred_at"] = events.isoformat(started + timedelta(milliseconds=index))  # strictly ordered
        bodies.append(body)
    with Connection(test_stack.amqp_uri) as connection:
        producer = connection.Producer(serializer="json")
        exchange = event_exchange(events.MEMBER_JOINED[0])
        for body in bodies + bodies[:10]:  # ten of them twice
            producer.publish(body, exchange=exchange, routing_key=events.MEMBER_JOINED[1], declare=[exchange],
                             **envelope(*events.MEMBER_JOINED, body))
    # 70 events reach four subscribers (org, usage, audit, notifications) at once: on a 2-core machine
    # busy with other work the burst's mail has taken over a minute, so the deadline leaves room
    wait_until(lambda: len(mailbox.to(owner.email, contains=f"Burst {tag}")) >= 60, timeout=150,
               what=lambda: f"sixty burst mails ({len(mailbox.to(owner.email, contains=f'Burst {tag}'))} arrived)")
    logged = wait_until(lambda: (lambda items: len(items) == 60 and all(d["status"] == "sent" for d in items)
                                 and items)(deliveries(gateway, owner, subject=f"Burst {tag}")), what="all logged")
    assert all(d["attempts"] == 1 and [a["outcome"] for a in d["attempt_log"]] == ["sent"] for d in logged)
    names = sorted(m.subject for m in mailbox.to(owner.email, contains=f"Burst {tag}"))
    assert names == sorted(f'Burst {tag} {i} joined {names[0].split(" joined ", 1)[1]}' for i in range(60))
    burst = {"org_id": owner.org_id, "user_id": {"$regex": f"^burst-{tag}"}}
    assert notifications_db.members.count_documents(burst) == 60
    assert notifications_db.organizations.find_one({"_id": owner.org_id})["member_count"] == 61
    assert notifications_db.mail_queue.count_documents({"org_id": owner.org_id}) == 0


def test_no_mail_was_ever_sent_twice(mailbox):
    """Across everything the sink received in this session (handler, dispatcher timer and retries
    race for the same deliveries): each delivery id reached the SMTP server once."""
    ids = [str(m.message["X-Delivery-Id"]).strip() for m in mailbox.all()]
    assert ids and len(ids) == len(set(ids)), sorted(i for i in set(ids) if ids.count(i) > 1)


def test_the_event_counters_show_a_retry_and_a_parking(test_stack, notifications_db):
    """``orgplatform_events_total`` counts what reliable handlers do with a failure: a first
    failure goes to the retry queue (``retried``), the last allowed one to the parking queue
    (``parked``, with the attempts header at its limit)."""
    from common.handlers import ATTEMPTS_HEADER, MAX_ATTEMPTS
    from tests.test_observability import scrape, total
    endpoint = f'http://127.0.0.1:{test_stack.metrics_ports["notifications"]}/metrics'

    def count(outcome):
        return total(scrape(endpoint), "orgplatform_events_total", outcome=outcome)
    retried, parked = count("retried"), count("parked")
    org_id = uuid.uuid4().hex  # unknown to the service: member_joined fails (no owner to mail)
    for attempts in (0, MAX_ATTEMPTS - 1):
        _, _, joined = make_event(events.MEMBER_JOINED, org_id, user_id=uuid.uuid4().hex,
                                  email=unique_email("unmailable"), name="Nobody", role="member", via_invite=True,
                                  is_owner=False)
        queue = to_notifications(test_stack, events.MEMBER_JOINED, joined, headers={ATTEMPTS_HEADER: attempts})
    wait_until(lambda: count("retried") > retried and count("parked") > parked, what="both counters to move")
    assert waiting_on(test_stack, queue + ".parked") >= 1
    # the retried one succeeds once the organization is known (nothing left retrying)
    _, _, created = make_event(events.ORGANIZATION_CREATED, org_id, name="Counted Lab",
                               owner_user_id=uuid.uuid4().hex, owner_email=unique_email("counted-owner"),
                               owner_name="Olga Owner")
    to_notifications(test_stack, events.ORGANIZATION_CREATED, created)
