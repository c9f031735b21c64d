"""Revoked access tokens fail at the gateway within a second, without an RPC per request."""
import os
import time

import pymongo
import pytest
from nameko.standalone.rpc import ClusterRpcProxy

from common.errors import DomainError
from gateway.revocations import RevocationList
from stack import stack
from tests.support import assert_error, assert_every_worker_answers, join, service_config, unique_email, wait_until

WITHIN = 1.0  # the contract: every gateway process rejects revoked tokens within 1 second


def rejected(gateway, token, path="/me"):
    response = gateway.get(path, token)
    return response.status_code == 401 and response.json()["error"]["code"] == "token_revoked"


def rejected_by_every_worker(test_stack, token, path="/me"):
    """Polling used one kept-alive connection (one worker); every other worker must refuse it too."""
    assert_every_worker_answers(test_stack, path, token, 401, "token_revoked")


def accepted_by_every_worker(test_stack, token, path="/me"):
    assert_every_worker_answers(test_stack, path, token, 200)


def test_removed_member_is_locked_out_at_once(gateway, tap, test_stack, owner):
    member = join(gateway, tap, owner, "member")
    members_path = f"/organizations/{owner.org_id}/members"
    assert gateway.get(members_path, member.token).status_code == 200
    assert gateway.delete(members_path + "/" + member.user_id, token=owner.token).status_code == 200
    wait_until(lambda: rejected(gateway, member.token, members_path), timeout=WITHIN, what="removed member's token")
    rejected_by_every_worker(test_stack, member.token, members_path)
    # the refresh token is dead as well, and the owner is unaffected
    assert_error(gateway.post("/auth/refresh", {"refresh_token": member.refresh_token}), 401, "invalid_token")
    assert gateway.get(members_path, owner.token).status_code == 200


def test_logout_revokes_only_that_session(gateway, test_stack, owner):
    other = gateway.post("/auth/login", {"email": owner.email, "password": owner.password}).json()
    assert gateway.post("/auth/logout", token=owner.token).status_code == 200
    wait_until(lambda: rejected(gateway, owner.token), timeout=WITHIN, what="logged-out token")
    rejected_by_every_worker(test_stack, owner.token)
    accepted_by_every_worker(test_stack, other["access_token"])


def test_role_change_revokes_and_refresh_brings_the_new_role(gateway, tap, test_stack, owner):
    member = join(gateway, tap, owner, "member")
    path = f"/organizations/{owner.org_id}/members/{member.user_id}"
    assert gateway.patch(path, {"role": "admin"}, owner.token).status_code == 200
    wait_until(lambda: rejected(gateway, member.token), timeout=WITHIN, what="token with the old role")
    rejected_by_every_worker(test_stack, member.token)
    refreshed = gateway.post("/auth/refresh", {"refresh_token": member.refresh_token})
    assert refreshed.status_code == 200, refreshed.text
    assert gateway.get("/me", refreshed.json()["access_token"]).json()["role"] == "admin"


def test_password_change_ends_every_session(gateway, test_stack, owner):
    other = gateway.post("/auth/login", {"email": owner.email, "password": owner.password}).json()
    wrong = gateway.post("/auth/password", {"current_password": "not it at all", "new_password": "a new long password"},
                         owner.token)
    assert_error(wrong, 422, "validation_failed")
    changed = gateway.post("/auth/password", {"current_password": owner.password,
                                              "new_password": "a new long password"}, owner.token)
    assert changed.status_code == 200, changed.text
    for token in (owner.token, other["access_token"]):
        wait_until(lambda token=token: rejected(gateway, token), timeout=WITHIN, what="token from before the password "
                                                                                      "change")
        rejected_by_every_worker(test_stack, token)
    assert_error(gateway.post("/auth/refresh", {"refresh_token": other["refresh_token"]}), 401, "invalid_token")
    assert gateway.get("/me", changed.json()["access_token"]).status_code == 200
    assert gateway.post("/auth/login", {"email": owner.email, "password": "a new long password"}).status_code == 200
    assert_error(gateway.post("/auth/login", {"email": owner.email, "password": owner.password}), 401,
                 "invalid_credentials")


@pytest.mark.slow
def test_a_gateway_that_missed_the_event_still_rejects_the_token(gateway, test_stack, owner):
    """Revoked while the gateway was down: after its restart, older tokens get a fresh check."""
    survivor = gateway.post("/auth/login", {"email": owner.email, "password": owner.password}).json()
    stack.stop_pid_file(stack._pid_file(test_stack, "gateway"))
    sid = __import__("jwt").decode(owner.token, options={"verify_signature": False})["sid"]
    with ClusterRpcProxy({"AMQP_URI": test_stack.amqp_uri}, timeout=5) as cluster:
        cluster.membership.logout(sid, owner.user_id, owner.org_id)
    stack.up(test_stack, quiet=True)
    assert rejected(gateway, owner.token)
    assert gateway.get("/me", survivor["access_token"]).status_code == 200


def test_login_is_rate_limited_per_email(gateway, owner):
    statuses = [gateway.post("/auth/login", {"email": owner.email, "password": "wrong password"}).status_code
                for _ in range(11)]
    assert statuses[:10] == [401] * 10
    limited = gateway.post("/auth/login", {"email": owner.email, "password": owner.password})
    assert_error(limited, 429, "rate_limited")
    assert int(limited.headers["Retry-After"]) >= 1


def test_login_is_rate_limited_per_client_address(gateway, test_stack, owner):
    """The suite logs in from 127.0.0.1 under a huge limit (stack.py), so a made-up address is used,
    passed to the login RPC as the gateway passes the caller's; its counter starts near the limit."""
    config = service_config(test_stack, "membership")
    limit, window = int(config["LOGIN_LIMIT_PER_ADDRESS"]), int(config["LOGIN_LIMIT_WINDOW"])
    db = pymongo.MongoClient(test_stack.mongo_url)[test_stack.db_prefix + "membership"]

    def counters(address):
        return [doc for doc in db.login_attempts.find() if doc["_id"].startswith(f"addr:{address}@")]

    # the gateway does hand the caller's address to the service: 127.0.0.1 is being counted
    assert_error(gateway.post("/auth/login", {"email": unique_email(), "password": "wrong password"}), 401)
    assert counters("127.0.0.1")
    address, elsewhere = (f"2001:db8::{os.urandom(4).hex()}" for _ in range(2))
    with ClusterRpcProxy({"AMQP_URI": test_stack.amqp_uri}, timeout=5) as cluster:
        def login(email, password, client_address):
            try:
                return cluster.membership.login(email, password, None, client_address)
            except DomainError as error:
                return error

        # counters are per fixed window: start early enough in one that the few attempts below share it
        wait_until(lambda: time.time() % window < window - 5, timeout=6, what="room left in the counting window")
        assert login(unique_email(), "wrong password", address).code == "invalid_credentials"
        [counter] = counters(address)
        db.login_attempts.update_one({"_id": counter["_id"]}, {"$set": {"count": limit - 1}})
        # attempt number `limit` is still answered, each with another email: the address is what counts
        assert login(unique_email(), "wrong password", address).code == "invalid_credentials"
        limited = login(unique_email(), "wrong password", address)
        assert limited.code == "rate_limited" and int(limited.details["retry_after"]) >= 1, limited
        assert login(owner.email, owner.password, address).code == "rate_limited"  # even the right password
        assert "access_token" in login(owner.email, owner.password, elsewhere)  # other addresses are not limited


def test_a_valid_answer_does_not_outlive_a_gap_in_the_event_stream():
    """The fresh-check cache must not vouch for a token whose revocation event fell into a gap."""
    session_valid, asked = {"value": True}, []

    def check_access(claims):
        asked.append(claims["jti"])
        return session_valid["value"]

    revocations = RevocationList(check_access)
    now = time.time()
    claims = {"jti": "t1", "sid": "s1", "sub": "u1", "org": "o1", "iat": now, "exp": now + 900}
    revocations.connected(now)  # a token issued right around the (re)connect gets a fresh check
    assert not revocations.is_revoked(claims) and not revocations.is_revoked(claims)
    assert asked == ["t1"], "while connected, the answer is cached"
    revocations.disconnected()
    session_valid["value"] = False  # logged out while no event can reach this process
    revocations.connected(time.time())
    assert revocations.is_revoked(claims), "the cached 'valid' answer survived the gap"
    revocations.disconnected()
    session_valid["value"] = True
    assert revocations.is_revoked(claims), "a 'revoked' answer is final"
    assert asked == ["t1", "t1"]


def test_answers_obtained_while_disconnected_are_not_cached():
    answers = [True, False]
    revocations = RevocationList(lambda claims: answers.pop(0))
    now = time.time()
    claims = {"jti": "t2", "sid": "s2", "sub": "u2", "org": "o2", "iat": now, "exp": now + 900}
    assert not revocations.is_revoked(claims)  # never connected: every request asks
    assert revocations.is_revoked(claims)


def test_cut_offs_not_issue_times_decide():
    """A token signed late from a document read before the change carries the old cut-off: it dies,
    however recent its ``iat``; one signed under the new cut-off lives, however early."""
    revocations = RevocationList(lambda claims: True)
    now = time.time()
    revocations.connected(now - 100)
    base = {"sid": "s", "sub": "u", "org": "o", "exp": now + 900}
    revocations.apply({"user_id": "u", "organization_id": "o", "not_before": now})
    assert revocations.is_revoked(dict(base, jti="a", iat=now + 1, mv=now - 5, av=0.0))
    assert not revocations.is_revoked(dict(base, jti="b", iat=now + 1, mv=now, av=0.0))
    # account-wide (password change): av decides, for org-scoped and org-less tokens alike
    revocations.apply({"user_id": "u", "organization_id": None, "not_before": now + 2})
    assert revocations.is_revoked(dict(base, jti="c", iat=now + 9, mv=now, av=now))
    assert revocations.is_revoked(dict(base, jti="d", org=None, iat=now + 9, av=now))
    assert not revocations.is_revoked(dict(base, jti="e", org=None, iat=now + 9, av=now + 2))
    # an organization being deleted: all of its tokens, whenever issued
    revocations.apply({"user_id": None, "organization_id": "o", "not_before": now})
    assert revocations.is_revoked(dict(base, jti="f", iat=now + 60, mv=now + 60, av=now + 60))
    assert not revocations.is_revoked(dict(base, jti="g", org="other", iat=now + 9, mv=0.0, av=now + 2))
