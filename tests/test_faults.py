"""Faults with real processes: a killed service, a restarted database server, a restarted broker.

Restarting RabbitMQ or FerretDB disturbs every stack that uses them, so those two tests only run
when this project started that server (its pid file under var/run) and restart it the same way.
"""
import os
import threading
import time

import pytest

from stack import stack
from tests.support import Mailbox, assert_error, unique_email, wait_until

RPC_TIMEOUT = 3  # the test instance's RPC_TIMEOUT
ROUTES = {  # one route per service that needs exactly that service
    "org": "/organizations/{org}",
    "membership": "/organizations/{org}/members",
    "notifications": "/organizations/{org}/notifications",
    "usage": "/organizations/{org}/usage",
}


def route(service, account):
    return ROUTES[service].format(org=account.org_id)


def timed_get(gateway, path, token):
    started = time.monotonic()
    response = gateway.get(path, token, timeout=30)
    return response, time.monotonic() - started


@pytest.mark.slow
@pytest.mark.parametrize("service", sorted(ROUTES))
def test_killed_service_gives_503_others_keep_answering_and_up_brings_it_back(gateway, test_stack, owner,
                                                                              service):
    # The gateway's revocation list vouches only for tokens issued CLOCK_MARGIN (5 s) after its
    # consumer connected; older ones are re-checked with the membership service (503 while it is
    # down, by design). Use a token the list vouches for, so "others keep answering" is about them.
    from gateway.revocations import CLOCK_MARGIN
    gateway_started = os.path.getmtime(stack._pid_file(test_stack, "gateway"))
    wait_until(lambda: time.time() > gateway_started + 2 * CLOCK_MARGIN + 1, timeout=30,
               what="tokens issued now to be vouched for by the gateway's revocation list")
    login = gateway.post("/auth/login", {"email": owner.email, "password": owner.password})
    assert login.status_code == 200, login.text
    owner.token = login.json()["access_token"]

    pid_file = stack._pid_file(test_stack, service)
    assert stack.read_pid(pid_file), f"{service} is not running"
    stack.stop_pid_file(pid_file, sig=9)
    try:
        check_outage(gateway, owner, service)
    finally:
        stack.up(test_stack, quiet=True)  # what `make up` does: starts only what is not running
    assert gateway.get(route(service, owner), owner.token).status_code == 200
    assert gateway.get(gateway.base_url + "/readyz").status_code == 200


def check_outage(gateway, owner, service):
    response, elapsed = timed_get(gateway, route(service, owner), owner.token)
    assert_error(response, 503, "service_unavailable")
    assert response.json()["error"]["details"] == {"service": service}
    assert response.headers.get("Retry-After")
    assert elapsed < RPC_TIMEOUT + 2, f"took {elapsed:.1f}s; the RPC timeout is {RPC_TIMEOUT}s"
    for other in ROUTES:
        if other != service:
            answer = gateway.get(route(other, owner), owner.token)
            assert answer.status_code == 200, (other, answer.text)
    ready = gateway.get(gateway.base_url + "/readyz")
    assert ready.status_code == 503 and ready.json()["checks"][service].startswith("unavailable")
    # the load balancer's question: one service down does not take the gateway out of rotation
    own = gateway.get(gateway.base_url + "/readyz/gateway")
    assert own.status_code == 200 and own.json()["checks"] == {"broker": "ok"}, own.text


class Traffic:
    """Requests in a loop from a thread; records (status, seconds) of each answer."""

    def __init__(self, gateway, account):
        self.gateway, self.account = gateway, account
        self.results, self.errors = [], []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                response = self.gateway.get(f"/organizations/{self.account.org_id}", self.account.token,
                                            timeout=30)
                self.results.append((response.status_code, time.monotonic() - started))
            except Exception as error:  # a hang or a dropped connection is a finding, not a crash
                self.errors.append(repr(error))
            time.sleep(0.05)  # pacing of the load generator, not synchronisation

    def stop(self):
        self.stopping.set()
        self.thread.join(timeout=40)
        return self.results, self.errors


def started_by_project(name):
    pid_file = os.path.join(stack.INFRA_RUN, name + ".pid")
    if stack.read_pid(pid_file) is None:
        pytest.skip(f"{name} was not started by this project (no {pid_file}): not ours to restart")
    return pid_file


@pytest.mark.slow
def test_rabbitmq_restart_mid_traffic(gateway, test_stack, owner, tap):
    pid_file = started_by_project("rabbitmq")
    mailbox = Mailbox(test_stack.mail_dir)
    traffic = Traffic(gateway, owner)
    wait_until(lambda: len(traffic.results) >= 3, what="traffic before the outage")
    # invites created just before the outage: their events are in flight (or in the outbox) when it begins
    before = [unique_email("before-outage") for _ in range(5)]
    invited = gateway.post(f"/organizations/{owner.org_id}/invites", {"emails": before, "role": "member"},
                           owner.token)
    assert invited.status_code == 201, invited.text
    stack.stop_pid_file(pid_file, timeout=30)
    try:
        # while the broker is down: a quick 503 for an RPC-backed route, never a hang or a 500
        for _ in range(3):
            response, elapsed = timed_get(gateway, f"/organizations/{owner.org_id}", owner.token)
            assert_error(response, 503, "service_unavailable")
            assert elapsed < 2, f"503 took {elapsed:.2f}s"
        assert gateway.get(gateway.base_url + "/healthz").status_code == 200
        # without the broker the gateway can serve nothing but static answers: out of rotation
        wait_until(lambda: gateway.get(gateway.base_url + "/readyz/gateway").status_code == 503, timeout=15,
                   what="the gateway's own readiness to fail without the broker")
    finally:
        stack.ensure_rabbitmq(test_stack)
        tap.reconnect()  # the suite's own listener (a test helper, not the product) listens anew
    # everything reconnects by itself
    wait_until(lambda: gateway.get(gateway.base_url + "/readyz").status_code == 200, timeout=90, interval=0.5,
               what="readiness after the broker restart")
    wait_until(lambda: gateway.get(gateway.base_url + "/readyz/gateway").status_code == 200, timeout=30,
               what="the gateway's own readiness after the broker restart")
    wait_until(lambda: gateway.get(f"/organizations/{owner.org_id}", owner.token).status_code == 200,
               timeout=30, what="the traffic route to answer again")
    results, errors = traffic.stop()
    assert not errors, errors[:5]
    assert {status for status, _ in results} <= {200, 503}, sorted({s for s, _ in results})
    assert max(seconds for _, seconds in results) < RPC_TIMEOUT + 2
    # events and mail flow again; no invite from before or after the outage is lost or mailed twice
    after = [unique_email("after-restart") for _ in range(5)]
    invited = gateway.post(f"/organizations/{owner.org_id}/invites", {"emails": after, "role": "member"},
                           owner.token)
    assert invited.status_code == 201, invited.text
    wait_until(lambda: all(mailbox.to(email) for email in before + after), timeout=60,
               what="the invitation mail of all 10 invites")
    assert {email: len(mailbox.to(email)) for email in before + after} == {email: 1 for email in before + after}
    # and revocation still works (event or fresh check)
    other = gateway.post("/auth/login", {"email": owner.email, "password": owner.password}).json()["access_token"]
    assert gateway.post("/auth/logout", token=other).status_code == 200
    wait_until(lambda: gateway.get("/me", other).status_code == 401, timeout=5, what="logged-out token rejected")


@pytest.mark.slow
def test_ferretdb_restart_services_reconnect(gateway, test_stack):
    if test_stack.external_mongo:
        pytest.skip("MONGO_URL points at an external server: not ours to restart")
    pid_file = started_by_project("ferretdb")
    stack.stop_pid_file(pid_file, timeout=30)
    try:
        started = time.monotonic()
        response = gateway.post("/auth/signup", {"email": unique_email("db-down"), "password": "correct horse battery",
                                                 "name": "While Down"}, timeout=30)
        elapsed = time.monotonic() - started
        assert_error(response, 503, "service_unavailable")  # not a 500, and not a hang
        assert elapsed < RPC_TIMEOUT + 2, f"took {elapsed:.1f}s"
    finally:
        stack.ensure_mongo(test_stack)

    def signup_works():
        response = gateway.post("/auth/signup", {"email": unique_email("db-back"),
                                                 "password": "correct horse battery", "name": "Back",
                                                 "organization_name": "Back Lab"}, timeout=30)
        return response.status_code == 201
    wait_until(signup_works, timeout=60, interval=0.5, what="sign-up after the database restart")
