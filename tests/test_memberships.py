"""Members, roles, invites, ownership and switching through the real gateway, services and bus."""
import base64
import os
import threading
import uuid
from datetime import UTC, datetime, timedelta

import pymongo
import pytest
import requests

from stack import stack
from tests.support import (
    Account,
    Mailbox,
    assert_error,
    assert_every_worker_answers,
    invite,
    join,
    run_together,
    service_config,
    superuser_token,
    unique_email,
    wait_until,
)


def org_path(team, suffix=""):
    return f'/organizations/{team["owner"].org_id}{suffix}'


def status_for(gateway, team, who, method, path, body=None):
    token = team[who].token if who != "anonymous" else None
    return gateway.request(method, path, token, json=body).status_code


def test_member_list_access(gateway, team):
    path = org_path(team, "/members")
    for who in ("owner", "admin", "dataset_manager", "member"):
        assert status_for(gateway, team, who, "GET", path) == 200, who
    assert status_for(gateway, team, "outsider", "GET", path) == 403
    assert status_for(gateway, team, "anonymous", "GET", path) == 401
    page = gateway.get(path, team["member"].token).json()
    roles = {item["user_id"]: (item["role"], item["is_owner"]) for item in page["items"]}
    assert roles[team["owner"].user_id] == ("admin", True)
    assert roles[team["member"].user_id] == ("member", False)
    assert len(page["items"]) == 4 and page["next_cursor"] is None


def test_member_list_pagination_search_and_stable_order(gateway, tap, team):
    path = org_path(team, "/members")
    full = gateway.get(path + "?limit=200", team["admin"].token).json()["items"]
    seen, cursor = [], None
    while True:
        response = gateway.get(path + "?limit=1" + (f"&cursor={cursor}" if cursor else ""), team["admin"].token)
        assert response.status_code == 200, response.text
        seen += response.json()["items"]
        cursor = response.json()["next_cursor"]
        if cursor is None:
            break
    assert [m["user_id"] for m in seen] == [m["user_id"] for m in full]
    found = gateway.get(path + "?q=DATASET_MANAGER%20PER", team["member"].token).json()["items"]
    assert [m["user_id"] for m in found] == [team["dataset_manager"].user_id]
    by_email = gateway.get(path + "?q=" + team["member"].email.upper(), team["member"].token).json()["items"]
    assert [m["user_id"] for m in by_email] == [team["member"].user_id]
    assert gateway.get(path + "?q=.*", team["member"].token).json()["items"] == []  # no regex injection
    assert_error(gateway.get(path + "?limit=0", team["member"].token), 422, "validation_failed")
    assert_error(gateway.get(path + "?cursor=garbage", team["member"].token), 422, "validation_failed")


@pytest.mark.parametrize("who,expected", [("owner", 200), ("admin", 200), ("dataset_manager", 403),
                                          ("member", 403), ("outsider", 403), ("anonymous", 401)])
def test_role_change_rules(gateway, team, who, expected):
    target = team["member"].user_id
    assert status_for(gateway, team, who, "PATCH", org_path(team, f"/members/{target}"),
                      {"role": "dataset_manager"}) == expected


def test_role_change_details(gateway, team):
    owner, admin = team["owner"], team["admin"]
    path = org_path(team, f'/members/{team["member"].user_id}')
    # only the owner may hand out the right to delete the organization
    assert_error(gateway.patch(path, {"can_delete_organization": True}, admin.token), 403, "forbidden")
    # the owner's role cannot be lowered
    lowered = gateway.patch(org_path(team, f"/members/{owner.user_id}"), {"role": "member"}, admin.token)
    assert_error(lowered, 409, "owner_protected")
    assert_error(gateway.patch(path, {}, owner.token), 422, "validation_failed")
    assert_error(gateway.patch(path, {"role": "king"}, owner.token), 422, "validation_failed")
    assert_error(gateway.patch(org_path(team, "/members/nobody"), {"role": "admin"}, owner.token), 404, "not_found")
    # the right belongs to admins: not for a member, granted to an admin, cleared by a demotion
    assert_error(gateway.patch(path, {"can_delete_organization": True}, owner.token), 409, "conflict")
    admin_path = org_path(team, f"/members/{admin.user_id}")
    granted = gateway.patch(admin_path, {"can_delete_organization": True}, owner.token)
    assert granted.status_code == 200 and granted.json()["can_delete_organization"] is True
    demoted = gateway.patch(admin_path, {"role": "member"}, owner.token)
    assert demoted.status_code == 200 and demoted.json()["can_delete_organization"] is False
    promoted = gateway.patch(admin_path, {"role": "admin"}, owner.token)
    assert promoted.status_code == 200 and promoted.json()["can_delete_organization"] is False, \
        "the right must not come back with a promotion"
    # promotion and the right in one request
    both = gateway.patch(path, {"role": "admin", "can_delete_organization": True}, owner.token)
    assert both.status_code == 200 and both.json()["can_delete_organization"] is True


@pytest.mark.parametrize("who,expected", [("owner", 200), ("admin", 200), ("dataset_manager", 403),
                                          ("outsider", 403), ("anonymous", 401)])
def test_removal_rules(gateway, team, who, expected):
    path = org_path(team, f'/members/{team["member"].user_id}')
    assert status_for(gateway, team, who, "DELETE", path) == expected


def test_leaving_and_owner_protection(gateway, team):
    member = team["member"]
    left = gateway.delete(org_path(team, f"/members/{member.user_id}"), token=member.token)
    assert left.status_code == 200 and left.json() == {"removed": True, "reason": "left"}
    owner_path = org_path(team, f'/members/{team["owner"].user_id}')
    assert_error(gateway.delete(owner_path, token=team["owner"].token), 409, "owner_protected")
    assert_error(gateway.delete(owner_path, token=team["admin"].token), 409, "owner_protected")


@pytest.mark.parametrize("who,expected", [("owner", 200), ("admin", 403), ("dataset_manager", 403),
                                          ("member", 403), ("outsider", 403), ("anonymous", 401)])
def test_ownership_transfer_rules(gateway, team, who, expected):
    assert status_for(gateway, team, who, "POST", org_path(team, "/ownership"),
                      {"user_id": team["admin"].user_id}) == expected


def test_ownership_transfer_reflected_everywhere(gateway, team):
    owner, admin = team["owner"], team["admin"]
    assert_error(gateway.post(org_path(team, "/ownership"), {"user_id": team["member"].user_id}, owner.token),
                 409, "conflict")
    response = gateway.post(org_path(team, "/ownership"), {"user_id": admin.user_id}, owner.token)
    assert response.status_code == 200, response.text
    # both old tokens carried the old owner flag: they are revoked; fresh logins show the new state
    wait_until(lambda: gateway.get("/me", owner.token).status_code == 401, timeout=1.0, what="old owner token revoked")
    old = gateway.post("/auth/login", {"email": owner.email, "password": owner.password}).json()
    new = gateway.post("/auth/login", {"email": admin.email, "password": admin.password}).json()
    me_old = gateway.get("/me", old["access_token"]).json()
    me_new = gateway.get("/me", new["access_token"]).json()
    assert (me_old["role"], me_old["is_owner"]) == ("admin", False)
    assert (me_new["role"], me_new["is_owner"]) == ("admin", True)
    wait_until(lambda: gateway.get(org_path(team), new["access_token"]).json()["owner"]["id"] == admin.user_id,
               what="overview owner to follow ownership_transferred")
    # the new owner can now be neither removed nor demoted; the old one can leave
    assert_error(gateway.delete(org_path(team, f"/members/{admin.user_id}"), token=old["access_token"]),
                 409, "owner_protected")
    assert gateway.delete(org_path(team, f"/members/{owner.user_id}"), token=old["access_token"]).status_code == 200


def test_invite_endpoints_rules(gateway, tap, team):
    path = org_path(team, "/invites")
    body = {"emails": [unique_email()], "role": "member"}
    for who, expected in (("admin", 201), ("owner", 201), ("dataset_manager", 403), ("member", 403),
                          ("outsider", 403), ("anonymous", 401)):
        assert status_for(gateway, team, who, "POST", path, body) == expected, who
        assert status_for(gateway, team, who, "GET", path) == (200 if expected == 201 else expected), who
    _, invite_id = invite(gateway, tap, team["owner"], unique_email())
    for who, expected in (("member", 403), ("outsider", 403), ("anonymous", 401)):
        assert status_for(gateway, team, who, "DELETE", org_path(team, f"/invites/{invite_id}")) == expected
    # another organization's admin, on its own org path, cannot reach this invite either
    other = gateway.delete(f'/organizations/{team["outsider"].org_id}/invites/{invite_id}',
                           token=team["outsider"].token)
    assert_error(other, 404, "not_found")
    assert status_for(gateway, team, "admin", "DELETE", org_path(team, f"/invites/{invite_id}")) == 200


def test_invites_are_normalised_deduplicated_and_listed(gateway, tap, team):
    email = unique_email("Mixed")
    response = gateway.post(org_path(team, "/invites"),
                            {"emails": [email.upper(), f" {email.lower()} ", team["member"].email],
                             "role": "dataset_manager"}, team["admin"].token)
    assert response.status_code == 201, response.text
    data = response.json()
    assert [i["email"] for i in data["items"]] == [email.lower()]
    assert data["skipped"] == [{"email": team["member"].email, "reason": "already_member"}]
    event = tap.wait_for("invite_created", invite_id=data["items"][0]["id"])
    assert event["role"] == "dataset_manager" and event["inviter_name"] == "admin person"
    assert event["accept_url"].startswith("http") and event["organization_id"] == team["owner"].org_id
    listed = gateway.get(org_path(team, "/invites"), team["admin"].token).json()["items"]
    assert data["items"][0]["id"] in [i["id"] for i in listed]
    too_many = gateway.post(org_path(team, "/invites"), {"emails": [unique_email() for _ in range(101)],
                                                         "role": "member"}, team["admin"].token)
    assert_error(too_many, 422, "validation_failed")


def test_invite_preview_and_acceptance_rules(gateway, tap, team, test_stack):
    email = unique_email("invitee")
    token, invite_id = invite(gateway, tap, team["admin"], email, "dataset_manager")
    preview = gateway.get(f"/invites/{token}")
    assert preview.status_code == 200, preview.text
    assert preview.json()["organization"] == {"id": team["owner"].org_id, "name": "Team Lab"}
    assert preview.json()["role"] == "dataset_manager" and "email" not in preview.text
    assert_error(gateway.get("/invites/not-a-token"), 404, "not_found")

    invitee = gateway.signup(organization_name=None, email=email)
    stranger = gateway.signup(organization_name=None)
    assert_error(gateway.post(f"/invites/{token}/accept"), 401)
    assert_error(gateway.post(f"/invites/{token}/accept", token=stranger.token), 403, "forbidden")
    accepted = gateway.post(f"/invites/{token}/accept", token=invitee.token)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["organization"]["role"] == "dataset_manager"
    assert gateway.get(org_path(team, "/members"), accepted.json()["access_token"]).status_code == 200
    # single use
    assert_error(gateway.post(f"/invites/{token}/accept", token=invitee.token), 404, "not_found")
    assert_error(gateway.get(f"/invites/{token}"), 404, "not_found")
    # already a member: a fresh invite cannot be used to join twice
    assert gateway.post(org_path(team, "/invites"), {"emails": [email], "role": "member"},
                        team["admin"].token).json()["skipped"][0]["reason"] == "already_member"


def test_revoked_and_expired_invites_are_dead(gateway, tap, team, test_stack):
    revoked_email, expired_email = unique_email("revoked"), unique_email("expired")
    revoked_token, revoked_id = invite(gateway, tap, team["admin"], revoked_email)
    expired_token, expired_id = invite(gateway, tap, team["admin"], expired_email)
    assert gateway.delete(org_path(team, f"/invites/{revoked_id}"), token=team["admin"].token).status_code == 200
    # time passing is simulated in the service's own database: the invite's expiry moves to the past
    db = pymongo.MongoClient(test_stack.mongo_url)[test_stack.db_prefix + "membership"]
    db.invites.update_one({"_id": expired_id}, {"$set": {"expires_at": db.invites.find_one(
        {"_id": expired_id})["created_at"]}})
    for email, token in ((revoked_email, revoked_token), (expired_email, expired_token)):
        account = gateway.signup(organization_name=None, email=email)
        assert_error(gateway.get(f"/invites/{token}"), 404, "not_found")
        assert_error(gateway.post(f"/invites/{token}/accept", token=account.token), 404, "not_found")
    listed = [i["id"] for i in gateway.get(org_path(team, "/invites"), team["admin"].token).json()["items"]]
    assert revoked_id not in listed and expired_id not in listed


def scan_databases(test_stack, secrets):
    """Fail if any document of any of the instance's databases holds one of ``secrets`` in plain
    text; returns the names (without prefix) of the databases scanned."""
    client = pymongo.MongoClient(test_stack.mongo_url)
    scanned = set()
    for name in client.list_database_names():
        if not name.startswith(test_stack.db_prefix):
            continue
        scanned.add(name[len(test_stack.db_prefix):])
        for collection in client[name].list_collection_names():
            for doc in client[name][collection].find():
                text = repr(doc)
                for what, secret in secrets.items():
                    assert secret not in text, f"{name}.{collection} holds the {what}"
    return scanned


def test_invite_tokens_never_stored_in_plain_text(gateway, tap, team, test_stack):
    """No database holds an invite, access or refresh token or a password in plain text. The first
    scan runs while the invite mail waits in the notifications queue (the SMTP sink is down, so its
    body, link included, must be kept for the retry); the second after it was sent."""
    admin, mailbox = team["admin"], Mailbox(test_stack.mail_dir)
    email, password = unique_email("secret"), f"pw-{os.urandom(8).hex()}"
    deliveries = f"/organizations/{admin.org_id}/notifications/deliveries?limit=200"
    sink = stack._pid_file(test_stack, "smtp")
    assert stack.stop_pid_file(sink)
    try:
        token, _ = invite(gateway, tap, admin, email)
        wait_until(lambda: [d for d in gateway.get(deliveries, admin.token).json()["items"]
                            if d["to"] == email and d["status"] == "queued" and d["attempts"] >= 1],
                   what="the invite mail queued after a failed attempt")
        assert {"membership", "notifications", "org"} <= scan_databases(test_stack, {"invite token": token})
    finally:
        stack.start_smtp_sink(test_stack)
    [mail] = mailbox.wait(email)
    assert token in mail.text, "the mail carries the link, so its queued body held the token"
    signup = gateway.post("/auth/signup", {"email": email, "password": password, "name": "Secret",
                                           "invite_token": token})
    assert signup.status_code == 201, signup.text
    refreshed = gateway.post("/auth/refresh", {"refresh_token": signup.json()["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.text
    scan_databases(test_stack, {
        "invite token": token, "password": password,
        "access token": signup.json()["access_token"], "refresh token": signup.json()["refresh_token"],
        "rotated access token": refreshed.json()["access_token"],
        "rotated refresh token": refreshed.json()["refresh_token"]})


def test_signup_with_invite_must_match_the_email(gateway, tap, team):
    token, _ = invite(gateway, tap, team["admin"], unique_email("right"))
    wrong = gateway.post("/auth/signup", {"email": unique_email("wrong"), "password": "correct horse battery",
                                          "name": "Wrong", "invite_token": token})
    assert_error(wrong, 403, "forbidden")


RACERS = 8


def test_accounts_race_for_the_last_seat(gateway, tap, team, test_stack):
    """Several accounts accept at the same instant (a barrier, one HTTP session each): one seat, one winner."""
    superuser = superuser_token(gateway)
    plan = {"name": "team", "included_users": 5, "included_storage_bytes": None, "paid_until": None}
    assert gateway.request("PUT", org_path(team, "/plan"), superuser, json=plan).status_code == 200
    # four members exist: one seat is left
    emails = [unique_email(f"racer{index}") for index in range(RACERS)]
    created = gateway.post(org_path(team, "/invites"), {"emails": emails, "role": "member"}, team["admin"].token)
    assert created.status_code == 201, created.text
    racers = []
    for item in created.json()["items"]:
        token = tap.wait_for("invite_created", invite_id=item["id"])["accept_url"].rsplit("/", 1)[1]
        racers.append((gateway.signup(organization_name=None, email=item["email"]), token))
    barrier = threading.Barrier(RACERS)
    results = [None] * RACERS

    def accept(index, account, token):
        with requests.Session() as http:
            barrier.wait(timeout=30)
            try:
                results[index] = http.post(gateway.api + f"/invites/{token}/accept", timeout=30,
                                           headers={"Authorization": "Bearer " + account.token})
            except requests.RequestException as error:
                results[index] = error

    run_together(accept, [(index,) + racer for index, racer in enumerate(racers)])
    statuses = sorted(getattr(r, "status_code", r) for r in results)
    assert statuses == [200] + [409] * (RACERS - 1), [getattr(r, "text", r) for r in results]
    for result in results:
        if result.status_code == 409:
            assert_error(result, 409, "user_limit_reached")
    winner = racers[[r.status_code for r in results].index(200)][0]
    members = gateway.get(org_path(team, "/members"), team["owner"].token).json()["items"]
    racer_ids = {account.user_id for account, _ in racers}
    assert [m["user_id"] for m in members if m["user_id"] in racer_ids] == [winner.user_id]
    overview = wait_until(lambda: (lambda o: o if o["members"]["count"] == 5 else None)(
        gateway.get(org_path(team), team["owner"].token).json()), what="member count 5")
    assert overview["members"] == {"count": 5, "included": 5, "exceeded": False}


def test_accepting_an_invite_as_a_member_is_a_conflict(gateway, tap, team, test_stack):
    """Already a member -> 409 already_member, and nothing changes. Two usable invites for one email
    only arise from concurrent invite requests (a new invite with another role replaces the pending
    one, the same role keeps it, and members are skipped), so that state is made in the service's
    database: the replaced invite is pending again."""
    email = unique_email("twice")
    first_token, first_id = invite(gateway, tap, team["admin"], email)
    second_token, _ = invite(gateway, tap, team["admin"], email, role="dataset_manager")
    invitee = gateway.signup(organization_name=None, email=email)
    assert_error(gateway.post(f"/invites/{first_token}/accept", token=invitee.token), 404, "not_found")
    joined = gateway.post(f"/invites/{second_token}/accept", token=invitee.token)
    assert joined.status_code == 200, joined.text
    db = pymongo.MongoClient(test_stack.mongo_url)[test_stack.db_prefix + "membership"]
    db.invites.update_one({"_id": first_id}, {"$set": {"status": "pending"}})
    seats = db.organizations.find_one({"_id": team["owner"].org_id})["member_count"]
    for token in (invitee.token, joined.json()["access_token"]):
        assert_error(gateway.post(f"/invites/{first_token}/accept", token=token), 409, "already_member")
    assert db.organizations.find_one({"_id": team["owner"].org_id})["member_count"] == seats
    members = gateway.get(org_path(team, "/members?q=" + email), team["owner"].token).json()["items"]
    assert [m["user_id"] for m in members] == [invitee.user_id]


def test_invites_expire_after_14_days_and_link_to_the_public_base_url(gateway, tap, team, test_stack):
    before = datetime.now(UTC)
    created = gateway.post(org_path(team, "/invites"), {"emails": [unique_email("ttl")], "role": "member"},
                           team["admin"].token)
    after = datetime.now(UTC)
    assert created.status_code == 201, created.text
    item = created.json()["items"][0]
    created_at, expires_at = (datetime.fromisoformat(item[key].replace("Z", "+00:00"))
                              for key in ("created_at", "expires_at"))
    assert before - timedelta(seconds=2) <= created_at <= after + timedelta(seconds=2), (before, item, after)
    assert expires_at - created_at == timedelta(days=14)
    stored = pymongo.MongoClient(test_stack.mongo_url)[test_stack.db_prefix + "membership"].invites.find_one(
        {"_id": item["id"]})
    assert stored["expires_at"] - stored["created_at"] == timedelta(days=14)
    event = tap.wait_for("invite_created", invite_id=item["id"])
    assert event["expires_at"] == item["expires_at"]
    # the link is <PUBLIC_BASE_URL>/invites/<token>, with the base URL the service is configured with
    prefix = service_config(test_stack, "membership")["PUBLIC_BASE_URL"].rstrip("/") + "/invites/"
    assert event["accept_url"].startswith(prefix), (prefix, event["accept_url"])
    token = event["accept_url"][len(prefix):]
    assert gateway.get(f"/invites/{token}").json()["expires_at"] == item["expires_at"]
    # the token carries >= 128 bits (HMAC-SHA256: 256) and the id it is derived from is random
    assert len(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))) >= 16
    assert uuid.UUID(item["id"]).version == 4


def test_creating_and_listing_organizations(gateway, owner):
    created = gateway.post("/organizations", {"name": "Second Lab"}, owner.token)
    assert created.status_code == 201, created.text
    assert created.json()["owner"]["id"] == owner.user_id
    listed = gateway.get("/organizations", owner.token).json()["items"]
    assert {o["id"] for o in listed} == {owner.org_id, created.json()["id"]}
    assert all(o["role"] == "admin" and o["is_owner"] for o in listed)
    assert_error(gateway.post("/organizations", {"name": "x"}), 401)
    # the token is still scoped to the first organization
    assert_error(gateway.get(f'/organizations/{created.json()["id"]}', owner.token), 403, "wrong_organization")


def test_switching_organizations(gateway, test_stack, owner):
    second = gateway.post("/organizations", {"name": "Switch Target"}, owner.token).json()
    other_session = gateway.post("/auth/login", {"email": owner.email, "password": owner.password}).json()
    switched = gateway.post("/auth/switch", {"organization_id": second["id"]}, owner.token)
    assert switched.status_code == 200, switched.text
    new_token = switched.json()["access_token"]
    assert switched.json()["organization"] == {"id": second["id"], "name": "Switch Target", "role": "admin",
                                               "is_owner": True}
    assert gateway.get(f'/organizations/{second["id"]}', new_token).status_code == 200
    # the switched-away session is revoked at once, in every gateway worker; the account's other
    # session (still in the first organization) is not
    wait_until(lambda: gateway.get("/me", owner.token).status_code == 401, timeout=1.0, what="old session revoked")
    assert_every_worker_answers(test_stack, "/me", owner.token, 401, "token_revoked")
    assert_every_worker_answers(test_stack, f"/organizations/{owner.org_id}", other_session["access_token"], 200)
    # login now goes to the last used organization
    login = gateway.post("/auth/login", {"email": owner.email, "password": owner.password}).json()
    assert gateway.get("/me", login["access_token"]).json()["organization"]["id"] == second["id"]
    stranger = gateway.signup()
    assert_error(gateway.post("/auth/switch", {"organization_id": stranger.org_id}, new_token), 403, "not_a_member")


def test_login_falls_back_to_the_oldest_membership(gateway, tap, team):
    member = team["member"]
    second = gateway.signup(organization_name="Fallback Lab")
    token, _ = invite(gateway, tap, second, member.email)
    joined = gateway.post(f"/invites/{token}/accept", token=member.token)
    assert joined.status_code == 200
    # the last used organization is now Fallback Lab; leaving it sends login back to Team Lab
    left = gateway.delete(f"/organizations/{second.org_id}/members/{member.user_id}",
                          token=joined.json()["access_token"])
    assert left.status_code == 200, left.text
    login = gateway.post("/auth/login", {"email": member.email, "password": member.password}).json()
    assert gateway.get("/me", login["access_token"]).json()["organization"]["id"] == team["owner"].org_id


def test_member_count_follows_joins_and_departures(gateway, tap, owner):
    path = f"/organizations/{owner.org_id}"
    newcomer = join(gateway, tap, owner, "member")
    wait_until(lambda: gateway.get(path, owner.token).json()["members"]["count"] == 2, what="count 2")
    gateway.delete(path + f"/members/{newcomer.user_id}", token=owner.token)
    wait_until(lambda: gateway.get(path, owner.token).json()["members"]["count"] == 1, what="count 1")
    assert isinstance(newcomer, Account)
