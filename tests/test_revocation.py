"""Revoked access tokens fail at the gateway within a second, without an RPC per request."""
import time

import pytest
from nameko.standalone.rpc import ClusterRpcProxy

from gateway.revocations import RevocationList
from stack import stack
from tests.support import assert_error, join, wait_until

WITHIN = 1.0  # the contract: every gateway process rejects revoked tokens within 1 second


def rejected(gateway, token, path="/me"):
    response = gateway.get(path, token)
    return response.status_code == 401 and response.json()["error"]["code"] == "token_revoked"


def test_removed_member_is_locked_out_at_once(gateway, tap, owner):
    member = join(gateway, tap, owner, "member")
    members_path = "/organizations/%s/members" % owner.org_id
    assert gateway.get(members_path, member.token).status_code == 200
    assert gateway.delete(members_path + "/" + member.user_id, token=owner.token).status_code == 200
    wait_until(lambda: rejected(gateway, member.token, members_path), timeout=WITHIN, what="removed member's token")
    # the refresh token is dead as well, and the owner is unaffected
    assert_error(gateway.post("/auth/refresh", {"refresh_token": member.refresh_token}), 401, "invalid_token")
    assert gateway.get(members_path, owner.token).status_code == 200


def test_logout_revokes_only_that_session(gateway, owner):
    other = gateway.post("/auth/login", {"email": owner.email, "password": owner.password}).json()
    assert gateway.post("/auth/logout", token=owner.token).status_code == 200
    wait_until(lambda: rejected(gateway, owner.token), timeout=WITHIN, what="logged-out token")
    assert gateway.get("/me", other["access_token"]).status_code == 200


def test_role_change_revokes_and_refresh_brings_the_new_role(gateway, tap, owner):
    member = join(gateway, tap, owner, "member")
    path = "/organizations/%s/members/%s" % (owner.org_id, member.user_id)
    assert gateway.patch(path, {"role": "admin"}, owner.token).status_code == 200
    wait_until(lambda: rejected(gateway, member.token), timeout=WITHIN, what="token with the old role")
    refreshed = gateway.post("/auth/refresh", {"refresh_token": member.refresh_token})
    assert refreshed.status_code == 200, refreshed.text
    assert gateway.get("/me", refreshed.json()["access_token"]).json()["role"] == "admin"


def test_password_change_ends_every_session(gateway, owner):
    other = gateway.post("/auth/login", {"email": owner.email, "password": owner.password}).json()
    wrong = gateway.post("/auth/password", {"current_password": "not it at all", "new_password": "a new long password"},
                         owner.token)
    assert_error(wrong, 422, "validation_failed")
    changed = gateway.post("/auth/password", {"current_password": owner.password,
                                              "new_password": "a new long password"}, owner.token)
    assert changed.status_code == 200, changed.text
    for token in (owner.token, other["access_token"]):
        wait_until(lambda: rejected(gateway, token), timeout=WITHIN, what="token from before the password change")
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
