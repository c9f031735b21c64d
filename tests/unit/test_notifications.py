"""Who gets which mail, on an in-memory store: the notifications service's recipient rules."""
import itertools
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.fernet import Fernet

from common import events
from common.events import isoformat, make_event
from services.notifications import dispatch, notify, preferences

OWNER, ADMIN, MEMBER = "owner@example.org", "ada@example.org", "mia@example.org"


_CLOCK = itertools.count()


def event(kind, org_id, **payload):
    """A validated event; each one a millisecond after the last (facts apply only if newer)."""
    _, _, body = make_event(kind, org_id, **payload)
    body["occurred_at"] = isoformat(datetime(2026, 1, 1, tzinfo=UTC) + timedelta(milliseconds=next(_CLOCK)))
    return events.load_event(kind, body)


@pytest.fixture
def cipher():
    return Fernet(Fernet.generate_key())


@pytest.fixture
def notifier(notifications_store, cipher):
    return lambda: notify.Notifier(notifications_store, "http://console.test", 120.0, cipher)


@pytest.fixture
def org(notifications_store, notifier, new_org_id):
    """A known organization: its owner and an admin joined, a member too."""
    n = notifier()
    n.organization_created(event(events.ORGANIZATION_CREATED, new_org_id, name="Lab", owner_user_id="u-owner",
                                 owner_email=OWNER, owner_name="Olga", created_at="2026-01-01T00:00:00Z",
                                 plan={"name": "team", "included_users": 3, "included_storage_bytes": None,
                                       "paid_until": None}))
    for user_id, email, role, is_owner, count in (("u-owner", OWNER, "admin", True, 1),
                                                  ("u-admin", ADMIN, "admin", False, 2),
                                                  ("u-member", MEMBER, "member", False, 3)):
        n.member_joined(event(events.MEMBER_JOINED, new_org_id, user_id=user_id, email=email, name=role,
                              role=role, via_invite=not is_owner, is_owner=is_owner, member_count=count))
    notifications_store.queue.clear()
    return new_org_id


def test_a_new_member_is_announced_to_the_owner_unless_settings_name_someone(notifications_store, notifier, org):
    join = dict(user_id="u-new", email="new@example.org", name="New", role="member", via_invite=True,
                is_owner=False, member_count=3)
    notifier().member_joined(event(events.MEMBER_JOINED, org, **join))
    assert notifications_store.mail_to("member_joined") == [OWNER]
    preferences.put_settings(notifications_store, org, {"new_user_email": "Team@Example.org", "plan_email": None,
                                                        "ai_job_recipients": "initiator"})
    notifier().member_joined(event(events.MEMBER_JOINED, org, **dict(join, user_id="u-new2")))
    assert notifications_store.mail_to("member_joined") == [OWNER, "team@example.org"]


def test_the_founder_joining_their_own_organization_is_no_news(notifications_store, notifier, new_org_id):
    notifier().member_joined(event(events.MEMBER_JOINED, new_org_id, user_id="u1", email=OWNER, name="Olga",
                                   role="admin", via_invite=False, is_owner=True, member_count=1))
    assert notifications_store.mail_to() == []


@pytest.mark.parametrize("mode, expected", [("initiator", [MEMBER]), ("admins", [ADMIN, OWNER]),
                                            ("initiator_and_admins", [ADMIN, MEMBER, OWNER])])
def test_ai_job_mail_goes_where_the_setting_says(notifications_store, notifier, org, mode, expected):
    preferences.put_settings(notifications_store, org, {"plan_email": None, "new_user_email": None,
                                                        "ai_job_recipients": mode})
    notifier().ai_job_completed(event(events.AI_JOB_COMPLETED, org, job_id="j1", job_type="segmentation",
                                      initiator_user_id="u-member", outcome="succeeded", credits=100))
    assert notifications_store.mail_to("ai_job_completed") == sorted(expected)


def test_the_member_limit_is_mailed_once_per_crossing(notifications_store, notifier, org):
    def joined(n, user_id):
        notifier().member_joined(event(events.MEMBER_JOINED, org, user_id=user_id, email=f"{user_id}@example.org",
                                       name=user_id, role="member", via_invite=True, is_owner=False,
                                       member_count=n))
    joined(4, "u4")
    joined(5, "u5")  # still over: the same crossing, no second mail
    assert notifications_store.mail_to("member_limit_exceeded") == [OWNER]
    notifier().member_left(event(events.MEMBER_LEFT, org, user_id="u5", reason="left", member_count=3))
    joined(4, "u6")  # back under, then over again: a new crossing
    assert notifications_store.mail_to("member_limit_exceeded") == [OWNER, OWNER]


def test_an_invite_is_mailed_to_its_address_with_the_link_sealed_at_rest(notifications_store, notifier, org, cipher):
    notifier().invite_created(event(events.INVITE_CREATED, org, invite_id="i1", email="Guest@Example.org",
                                    role="member", inviter_name="Olga", accept_url="http://console.test/invites/SECRET",
                                    expires_at="2030-01-01T00:00:00Z", organization_name="Lab"))
    [entry] = notifications_store.queue.values()
    assert entry["to"] == "guest@example.org" and entry["sealed"]
    assert "SECRET" not in entry["text"] and "SECRET" in dispatch.unseal(cipher, entry["text"])


def test_an_unusable_address_is_not_mailed(notifications_store, notifier, org):
    notifications_store.orgs[org]["owner_email"] = "x@ex..ample.com"
    notifier().member_joined(event(events.MEMBER_JOINED, org, user_id="u9", email="n@example.org", name="N",
                                   role="member", via_invite=True, is_owner=False, member_count=3))
    assert notifications_store.mail_to("member_joined") == []


def test_settings_refuse_lists_and_unknown_fields(notifications_store, org):
    from common.errors import DomainError
    with pytest.raises(DomainError) as refused:
        preferences.put_settings(notifications_store, org, {"plan_email": "a@example.org, b@example.org",
                                                            "colour": "red", "ai_job_recipients": "everyone"})
    assert set(refused.value.details) == {"plan_email", "colour", "ai_job_recipients"}


def test_every_event_the_service_hands_to_the_notifier_has_one_entry_in_the_table():
    from common import topology
    handled = {s.event for s in topology.subscriptions() if s.service == "notifications"}
    own_handlers = {events.ORGANIZATION_DELETED, events.ACCOUNT_DELETED}  # the service applies these itself
    assert set(notify.HANDLERS) == handled - own_handlers
