"""Abuse is bounded (issue 12, item 3, membership side): sign-up and login limits per client
address, password guesses through ``POST /auth/password``, the bounded password-hashing queue,
invite batches (time, retries, limits), and sign-ups with an invite that fail leaving nothing.

How the limits are tested honestly. The whole suite talks to the test stack from 127.0.0.1, so the
test stack runs with per-address limits far too high to reach. The limits themselves are tested on
a *limited* side pair -- a second membership process and a second gateway, on a vhost of their
own, sharing the test stack's databases -- started with low limits and a small, costly hashing
queue. The client address is what it really is: the gateway passes the TCP peer address, never a
header, and every test connects from addresses of its own in 127.0.0.0/8 (Linux routes all of
them to the loopback interface, so a client socket can bind any of them as its source). An
``X-Forwarded-For`` header is sent along to show that it changes nothing.
"""
import copy
import http.client
import json
import os
import random
import statistics
import threading
import time
import uuid

import pytest

from stack import stack
from tests.support import (
    SUMMARY,
    Mailbox,
    assert_error,
    free_port,
    invite,
    join,
    run_together,
    superuser_token,
    unique_email,
    wait_until,
)

#: the limited pair's settings. Windows of about a day, so a test hardly ever straddles two, and of an odd
#: length (86,399 s is coprime with the test stack's 60, 600 and 3,600 s windows), so a window of the
#: limited pair does not start at the same second as one of the test stack (not for centuries), so
#: the two never share a counter document.
LIMITS = {
    "SIGNUP_LIMIT_PER_ADDRESS": "3", "SIGNUP_LIMIT_WINDOW": "86399",
    "LOGIN_LIMIT_PER_ADDRESS": "3", "LOGIN_LIMIT_PER_EMAIL": "6", "LOGIN_LIMIT_WINDOW": "86399",
    "INVITE_LIMIT_PER_INVITER": "20", "INVITE_LIMIT_PER_ORG": "30", "INVITE_LIMIT_WINDOW": "86399",
    # one hash at a time, two more may wait, with production's costly hash (64 MiB, 3 passes: ~0.1 s
    # on an idle core) and production's RPC timeout
    "ARGON2_CONCURRENCY": "1", "ARGON2_QUEUE": "2", "ARGON2_QUEUE_WAIT": "2",
    "ARGON2_TIME_COST": "3", "ARGON2_MEMORY_KIB": "65536", "RPC_TIMEOUT": "5",
    # the gateway's own hashing bulkhead (tests/test_edge.py) would shed first: open it wide here so
    # what is measured is the membership service's queue
    "BULKHEAD_HASHING": "64",
}


def new_address():
    """A loopback address no other test (and not the rest of the suite, 127.0.0.1) uses."""
    return f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


class Client:
    """HTTP to one gateway from one source address (a new connection per request)."""

    def __init__(self, port, address):
        self.port, self.address = port, address

    def request(self, method, path, body=None, token=None, headers=None, timeout=30):
        headers = dict(headers or {}, **({"Authorization": "Bearer " + token} if token else {}))
        if body is not None:
            headers["Content-Type"] = "application/json"
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout,
                                                source_address=(self.address, 0))
        started = time.monotonic()
        try:
            connection.request(method, "/api/v1" + path if path.startswith("/") and path != "/healthz" else path,
                               body=json.dumps(body) if body is not None else None, headers=headers)
            response = connection.getresponse()
            raw = response.read()
        finally:
            connection.close()
        return Answer(response.status, dict(response.headers), json.loads(raw) if raw else None,
                      time.monotonic() - started)

    def post(self, path, body=None, token=None, **kw):
        return self.request("POST", path, body, token, **kw)


class Answer:
    def __init__(self, status, headers, body, seconds):
        self.status, self.headers, self.body, self.seconds = status, headers, body, seconds

    @property
    def code(self):
        return (self.body or {}).get("error", {}).get("code") if isinstance(self.body, dict) else None

    def __repr__(self):
        return f"<{self.status} {self.code} {self.seconds:.2f}s {str(self.body)[:160]}>"


def assert_refused(answer, status, code):
    assert (answer.status, answer.code) == (status, code), answer
    assert set(answer.body["error"]) == {"code", "message", "details"}, answer
    assert int(answer.headers["Retry-After"]) >= 1, answer.headers
    return answer


@pytest.fixture(scope="module")
def limited(test_stack):
    """A membership process and a gateway with low limits, on a vhost of their own, sharing the test
    stack's databases (accounts and organizations made through the main gateway exist there)."""
    side = copy.copy(test_stack)
    side.vhost = test_stack.vhost + "-limits"
    side.gateway_port = free_port()
    side.upstream_port = side.gateway_port  # its gunicorn is reached directly, from each test's own address
    stack.reset_vhost(side)
    stack.declare_topology(side)
    pid_files = []
    try:
        stack.spawn("membership-limits", stack.service_argv("membership"), test_stack.run_dir, test_stack.log_dir,
                    dict(side.service_env("membership"), **LIMITS))
        pid_files.append(os.path.join(test_stack.run_dir, "membership-limits.pid"))
        stack.spawn("gateway-limits", [os.path.join(stack.VENV_BIN, "gunicorn"), "-c",
                                       os.path.join(stack.ROOT, "gateway", "gunicorn.conf.py"),
                                       "gateway.app:create_app()"], test_stack.run_dir, test_stack.log_dir,
                    dict(side.service_env("gateway"), **LIMITS))
        pid_files.append(os.path.join(test_stack.run_dir, "gateway-limits.pid"))
        probe = Client(side.gateway_port, new_address())

        def answering():  # the gateway is up and the membership process consumes its RPC queue
            try:
                return probe.post("/auth/refresh", {"refresh_token": "x" * 20}, timeout=5).status == 401
            except OSError:
                return False
        wait_until(answering, timeout=60, interval=0.3, what="the limited gateway and membership process")
        yield side
    finally:
        for pid_file in pid_files:
            stack.stop_pid_file(pid_file)
        try:
            stack._management(side, "DELETE", f'/api/vhosts/{stack.urllib.request.quote(side.vhost, safe="")}')
        except OSError:
            pass


def client(side, address=None):
    return Client(side.gateway_port, address or new_address())


def signup_body(email=None, **extra):
    return dict({"email": email or unique_email("abuse"), "password": "correct horse battery", "name": "Abuse"},
                **extra)


# -- 1. sign-up per client address ---------------------------------------------------------------

def test_signup_is_rate_limited_per_client_address(limited, gateway):
    attacker, other = client(limited), client(limited)
    taken = gateway.signup(organization_name=None).email
    # every sign-up counts, also one refused for its email: each costs work
    assert attacker.post("/auth/signup", signup_body()).status == 201
    assert attacker.post("/auth/signup", signup_body(taken)).code == "email_taken"
    assert attacker.post("/auth/signup", signup_body()).status == 201
    refused = assert_refused(attacker.post("/auth/signup", signup_body()), 429, "rate_limited")
    assert int(refused.body["error"]["details"]["retry_after"]) >= 1
    # also with an invite (checked before the invite: a bad token does not say 404 any more)
    assert_refused(attacker.post("/auth/signup", signup_body(invite_token="no-such-invite")), 429, "rate_limited")
    # a header naming another client changes nothing: only the TCP peer counts
    assert_refused(attacker.post("/auth/signup", signup_body(), headers={"X-Forwarded-For": other.address}),
                   429, "rate_limited")
    # another address is not affected
    assert other.post("/auth/signup", signup_body()).status == 201
    assert other.post("/auth/signup", signup_body(invite_token="no-such-invite")).code == "not_found"


# -- 4. a refused login costs the attacker's address, not the victim's email ----------------------

def test_logins_refused_for_the_address_do_not_lock_the_victim_out(limited, gateway):
    victim = gateway.signup(organization_name=None)
    attacker = client(limited)
    guesses = [attacker.post("/auth/login", {"email": victim.email, "password": f"guess {n}"}) for n in range(25)]
    assert [g.status for g in guesses] == [401] * 3 + [429] * 22, guesses
    assert_refused(guesses[-1], 429, "rate_limited")
    # the victim, from their own address, gets in (their email counted 3 guesses, not 25)
    for _ in range(2):
        assert client(limited).post("/auth/login", {"email": victim.email, "password": victim.password}).status == 200
    # the per-email limit still stops guessing spread over many addresses (3 + 3 more, then 429)
    spread = [client(limited).post("/auth/login", {"email": victim.email, "password": "guess"}) for _ in range(4)]
    assert [g.status for g in spread] == [401, 401, 401, 429], spread


# -- 3. guesses of current_password ------------------------------------------------------------

def test_password_change_guesses_count_against_the_email_limit(limited, gateway):
    account = gateway.signup(organization_name=None)
    caller = client(limited)
    body = {"current_password": "not the password", "new_password": "a brand new password"}
    for _ in range(6):
        answer = caller.post("/auth/password", body, account.token)
        assert (answer.status, answer.code) == (422, "validation_failed"), answer
    assert_refused(caller.post("/auth/password", body, account.token), 429, "rate_limited")
    # now even the right password waits for the window: guessing stopped, not just slowed
    right = dict(body, current_password=account.password)
    assert_refused(caller.post("/auth/password", right, account.token), 429, "rate_limited")
    # and the limit is the login limit of that email: logging in is refused too
    assert_refused(client(limited).post("/auth/login", {"email": account.email, "password": account.password}),
                   429, "rate_limited")


# -- 2. the password-hashing queue is bounded --------------------------------------------------------

BURST = 40


def warm_up(side, parallel=16):
    """Requests that cost no hash, as many at once as the gateway has threads: every gateway worker
    starts its RPC proxies now (they are created lazily), not in the middle of the burst."""
    barrier = threading.Barrier(parallel)

    def one():
        barrier.wait(timeout=30)
        client(side).post("/auth/refresh", {"refresh_token": "x" * 20})
    threads = [threading.Thread(target=one) for _ in range(parallel)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_a_burst_of_signups_is_shed_fast_and_the_service_stays_responsive(limited, gateway, request):
    """40 sign-ups at once, each from its own address (so the queue is tested, not the rate limit),
    against one hashing slot and two waiting places with production's hash cost. The membership
    service itself is probed over RPC meanwhile (what this change guarantees; the gateway's own
    thread bulkheads are tested elsewhere), and ``/healthz`` and ``/me`` through the gateway."""
    from nameko.standalone.rpc import ClusterRpcProxy

    rpc_timeout = float(LIMITS["RPC_TIMEOUT"])
    prober = client(limited)
    me_account = gateway.signup(organization_name=None)
    warm_up(limited)
    barrier = threading.Barrier(BURST + 2)
    answers, probes, rpc_probes, done = [None] * BURST, [], [], threading.Event()

    def signup(index):
        attacker = client(limited)
        barrier.wait(timeout=30)
        answers[index] = attacker.post("/auth/signup", signup_body())

    def probe():
        barrier.wait(timeout=30)
        while not done.is_set():
            for path, token in (("/healthz", None), ("/me", me_account.token)):
                probes.append((path, prober.request("GET", path, token=token)))

    def probe_rpc():
        with ClusterRpcProxy({"AMQP_URI": limited.amqp_uri}, timeout=rpc_timeout) as cluster:
            cluster.membership.ping()
            barrier.wait(timeout=30)
            while not done.is_set():
                started = time.monotonic()
                me = cluster.membership.me(me_account.user_id, None)
                rpc_probes.append(time.monotonic() - started)
                assert me["user"]["id"] == me_account.user_id

    threads = [threading.Thread(target=signup, args=(index,)) for index in range(BURST)]
    probers = [threading.Thread(target=probe), threading.Thread(target=probe_rpc)]
    for thread in threads + probers:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    for thread in probers:
        thread.join()

    statuses = sorted(a.status for a in answers)
    shed = [a for a in answers if a.status == 503]
    assert set(statuses) <= {201, 503}, answers
    assert shed and statuses.count(201) >= 1, answers
    for answer in shed:  # shed by the hashing queue, not an RPC timeout (whose details name the service)
        assert_refused(answer, 503, "service_unavailable")
        assert {k: str(v) for k, v in answer.body["error"]["details"].items()} == {"retry_after": "1"}, answer
    # nobody waited for the RPC timeout: the excess is refused at once (some within a second even
    # on a busy machine), the admitted ones are hashed promptly
    assert max(a.seconds for a in answers) < rpc_timeout, sorted(answers, key=lambda a: -a.seconds)[:3]
    assert min(a.seconds for a in shed) < 1.0, sorted(a.seconds for a in shed)
    # the membership service kept answering other requests meanwhile, and so did the gateway
    assert rpc_probes and max(rpc_probes) < 1.5, sorted(rpc_probes)[-5:]
    assert probes and all(answer.status == 200 for _, answer in probes), probes
    assert max(answer.seconds for _, answer in probes) < rpc_timeout, probes
    request.config.stash.setdefault(SUMMARY, []).append(
        f"sign-up burst ({BURST} at once, 1 hashing slot + 2 waiting): {statuses.count(201)} admitted, {len(shed)} "
        f"shed (median {statistics.median(a.seconds for a in shed):.2f} s), slowest answer "
        f"{max(a.seconds for a in answers):.2f} s, slowest membership RPC meanwhile {max(rpc_probes):.2f} s, slowest "
        f"/healthz or /me {max(answer.seconds for _, answer in probes):.2f} s")


# -- 5. invite batches ----------------------------------------------------------------------------

def test_a_batch_of_100_answers_in_time_and_a_retry_kills_no_mailed_link(gateway, tap, owner, test_stack):
    rpc_timeout = float(test_stack.service_env().get("RPC_TIMEOUT") or 5)
    mailbox = Mailbox(test_stack.mail_dir)
    path = f"/organizations/{owner.org_id}/invites"
    emails = [unique_email(f"batch{index}") for index in range(100)]
    key = {"Idempotency-Key": uuid.uuid4().hex}
    started = time.monotonic()
    first = gateway.post(path, {"emails": emails, "role": "member"}, owner.token, headers=key)
    took = time.monotonic() - started
    assert first.status_code == 201, first.text
    assert took < rpc_timeout - 0.5, took
    assert "Idempotent-Replayed" not in first.headers
    ids = {item["email"]: item["id"] for item in first.json()["items"]}
    assert sorted(ids) == sorted(emails) and len(set(ids.values())) == 100

    # the same key: the first answer again, flagged; the same key with another batch: 409
    replay = gateway.post(path, {"emails": emails, "role": "member"}, owner.token, headers=key)
    assert replay.status_code == 201 and replay.headers.get("Idempotent-Replayed") == "true", replay.text
    assert replay.json() == first.json()
    assert_error(gateway.post(path, {"emails": emails[:5], "role": "member"}, owner.token, headers=key),
                 409, "conflict")
    assert_error(gateway.post(path, {"emails": emails, "role": "member"}, owner.token,
                              headers={"Idempotency-Key": "bad key"}), 422, "validation_failed")

    # the links are mailed; then a retry without a key keeps every pending invite (same ids)
    mailed = mailbox.wait(emails[0], contains="invited")[0]
    retry = gateway.post(path, {"emails": list(reversed(emails)), "role": "member"}, owner.token)
    assert retry.status_code == 201, retry.text
    assert {item["email"]: item["id"] for item in retry.json()["items"]} == ids
    pending = gateway.get(path, owner.token).json()["items"]
    assert {item["email"]: item["id"] for item in pending} == ids
    # one invite_created per email, none for the retries
    wait_until(lambda: len(tap.all("invite_created", organization_id=owner.org_id)) >= 100, timeout=30,
               what="100 invite_created events")
    assert sorted(e["invite_id"] for e in tap.all("invite_created", organization_id=owner.org_id)) == sorted(
        ids.values())
    # the mailed link still works
    token = mailed.text.split("/invites/", 1)[1].split()[0]
    joined = gateway.post("/auth/signup", {"email": emails[0], "password": "correct horse battery",
                                           "name": "Batch Invitee", "invite_token": token})
    assert joined.status_code == 201, joined.text
    assert joined.json()["organization"]["id"] == owner.org_id
    # another role is a new invite: the old link of that email dies, as documented
    changed = gateway.post(path, {"emails": [emails[1]], "role": "admin"}, owner.token)
    assert changed.status_code == 201 and changed.json()["items"][0]["id"] != ids[emails[1]], changed.text


def test_invites_are_rate_limited_per_inviter_and_per_organization(limited, gateway, tap, owner):
    admin = join(gateway, tap, owner, "admin")
    path = f"/organizations/{owner.org_id}/invites"
    as_owner, as_admin = client(limited), client(limited)

    def batch(who, token, count, emails=None):
        return who.post(path, {"emails": emails or [unique_email("limit") for _ in range(count)], "role": "member"},
                        token)

    first = batch(as_owner, owner.token, 15)
    assert first.status == 201, first
    # 15 + 10 > 20 for this inviter: refused, and the refused batch uses up nothing
    assert_refused(batch(as_owner, owner.token, 10), 429, "rate_limited")
    assert batch(as_owner, owner.token, 5).status == 201
    # a repeat of pending invites creates nothing, mails nothing and costs nothing
    again = batch(as_owner, owner.token, 0, emails=[i["email"] for i in first.body["items"]])
    assert again.status == 201 and [i["id"] for i in again.body["items"]] == [i["id"] for i in first.body["items"]]
    # another inviter has a budget of their own, but the organization's (30) is shared
    assert batch(as_admin, admin.token, 10).status == 201
    assert_refused(batch(as_admin, admin.token, 1), 429, "rate_limited")


# -- 6. a sign-up with an invite that fails leaves no account --------------------------------------

RACERS = 6


def test_signups_that_lose_the_last_seat_leave_no_account_behind(gateway, tap, owner):
    superuser = superuser_token(gateway)
    plan_path = f"/organizations/{owner.org_id}/plan"
    plan = {"name": "team", "included_users": 2, "included_storage_bytes": None, "paid_until": None}
    assert gateway.request("PUT", plan_path, superuser, json=plan).status_code == 200
    racers = []
    for index in range(RACERS):
        email = unique_email(f"seat{index}")
        racers.append((email, invite(gateway, tap, owner, email)[0]))
    barrier = threading.Barrier(RACERS)
    results = [None] * RACERS

    def signup(index, email, token):
        barrier.wait(timeout=30)
        for _ in range(10):
            answer = client_for_main(gateway).post("/auth/signup", signup_body(email, invite_token=token))
            # the main gateway's hashing bulkhead (4 per worker) may shed a racer: it retries after
            # Retry-After, as a client does; what is checked is the seat race and what it leaves
            if not (answer.status == 503 and "bulkhead" in answer.body["error"]["details"]):
                break
            shed_at = time.monotonic()
            retry_after = float(answer.headers["Retry-After"])
            wait_until(lambda shed_at=shed_at, retry_after=retry_after: time.monotonic() - shed_at >= retry_after,
                       timeout=10,
                       interval=0.05, what="Retry-After")
        results[index] = answer

    run_together(signup, [(index,) + racer for index, racer in enumerate(racers)])
    assert sorted(r.status for r in results) == [201] + [409] * (RACERS - 1), results
    losers = [racer for racer, result in zip(racers, results, strict=False) if result.status == 409]
    assert {r.code for r in results if r.status == 409} == {"user_limit_reached"}, results
    for email, _ in losers:  # no account was left behind
        assert_error(gateway.post("/auth/login", {"email": email, "password": "correct horse battery"}),
                     401, "invalid_credentials")
    # more seats: every loser's retry with the same invite gets in (no 409 email_taken)
    assert gateway.request("PUT", plan_path, superuser, json=dict(plan, included_users=10)).status_code == 200
    for email, token in losers:
        retry = gateway.post("/auth/signup", signup_body(email, invite_token=token))
        assert retry.status_code == 201, retry.text


def client_for_main(gateway):
    """A one-request client of the main gateway (one connection per racer, all released together)."""
    port = int(gateway.base_url.rsplit(":", 1)[1])
    return Client(port, "127.0.0.1")
