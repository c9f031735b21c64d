"""Figures 7 and 8: ``/healthz`` p99 while the gateway is abused (issue 12, "abuse is bounded").

* ``healthz_p99_under_signups``: 40 clients post sign-ups for an already-registered email (each
  costs a production password hash, nothing is stored) one after the other, a refused one after
  its ``Retry-After``, while one client measures ``/healthz``. The membership service runs with production hashing
  (argon2id,
  64 MiB, 3 passes) for this figure: the bench instance otherwise hashes cheaply, like the tests.
* ``healthz_p99_slow_connections``: 200 connections each send one header line per second and
  never finish their request (a connection nginx drops is opened again), while one client
  measures ``/healthz``.

Goal for both: under 100 ms. The helpers are also used by ``tests/test_edge.py``; this module
imports nothing of the bench harness at import time, so tests can use it without the bench's
environment.
"""
import socket
import threading
import time

import requests

SECONDS = 6.0
SIGNUP_CLIENTS = 40
SLOW_CONNECTIONS = 200
GOAL_MS = 100


def p99(samples):
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


class Latencies(threading.Thread):
    """GETs ``url`` one after the other until stopped; records each answer's seconds (a failure or
    a timeout counts as the timeout), so a stalled gateway shows as a huge p99, never as no data."""

    def __init__(self, url, token=None, timeout=10.0):
        super().__init__(daemon=True)
        self.url, self.timeout = url, timeout
        self.headers = {"Authorization": "Bearer " + token} if token else {}
        self.samples, self.statuses = [], []
        self.halt = threading.Event()

    def run(self):
        with requests.Session() as http:
            while not self.halt.is_set():
                started = time.monotonic()
                try:
                    status = http.get(self.url, headers=self.headers, timeout=self.timeout).status_code
                except requests.RequestException:
                    status = None
                self.samples.append(time.monotonic() - started if status else self.timeout)
                self.statuses.append(status)

    def stop(self):
        self.halt.set()
        self.join(timeout=2 * self.timeout)
        return self


class SlowClients(threading.Thread):
    """``headers`` connections that send one header line per second and never finish their request
    head, and ``bodies`` connections that announce a body and send one byte of it per second.
    A connection the server drops is opened again, so the attack stays in place all along."""

    def __init__(self, host, port, headers=200, bodies=0):
        super().__init__(daemon=True)
        self.address = (host, port)
        self.kinds = ["header"] * headers + ["body"] * bodies
        self.sockets = [None] * len(self.kinds)
        self.reopened = 0
        self.halt = threading.Event()
        for index in range(len(self.kinds)):
            self._open(index)

    def _open(self, index):
        sock = socket.create_connection(self.address, timeout=5)
        if self.kinds[index] == "header":
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        else:
            sock.sendall(b"POST /api/v1/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100000\r\n\r\n{")
        self.sockets[index] = sock

    def run(self):
        line = 0
        while not self.halt.wait(1.0):
            line += 1
            for index, sock in enumerate(self.sockets):
                try:
                    sock.sendall(b"X-Slow-%d: x\r\n" % line if self.kinds[index] == "header" else b" ")
                except OSError:
                    sock.close()
                    self.reopened += 1
                    try:
                        self._open(index)
                    except OSError:
                        pass

    def stop(self):
        self.halt.set()
        self.join(timeout=10)
        for sock in self.sockets:
            sock.close()


class SignupStorm:
    """``clients`` threads, released together (a barrier), each posting sign-ups for ``email``
    (already registered) one after the other until stopped; a refused one (503/429) waits for
    its ``Retry-After``, as an HTTP client library does. (A flood that ignores ``Retry-After`` is
    reported separately: on one 2-core machine it measures the attacker's CPU as much as ours.)"""

    def __init__(self, api, email, clients=SIGNUP_CLIENTS, honour_retry_after=True):
        self.body = {"email": email, "password": "storm password 123", "name": "Storm"}
        self.url = api + "/auth/signup"
        self.honour = honour_retry_after
        self.statuses = []
        self.halt = threading.Event()
        self.barrier = threading.Barrier(clients + 1)
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]
        for thread in self.threads:
            thread.start()

    def _run(self):
        with requests.Session() as http:
            self.barrier.wait(timeout=30)
            while not self.halt.is_set():
                try:
                    answer = http.post(self.url, json=self.body, timeout=30)
                except requests.RequestException as error:
                    self.statuses.append(type(error).__name__)
                    continue
                self.statuses.append(answer.status_code)
                if self.honour and answer.status_code in (429, 503):
                    self.halt.wait(float(answer.headers.get("Retry-After") or 1))

    def release(self):
        self.barrier.wait(timeout=30)

    def stop(self):
        self.halt.set()
        for thread in self.threads:
            thread.join(timeout=60)
        return {status: self.statuses.count(status) for status in set(self.statuses)}


def production_hashing(inst):
    """Context: the membership service replaced by one with production argon2 settings."""
    from contextlib import contextmanager

    from stack import stack

    @contextmanager
    def swapped():
        env = dict(inst.service_env("membership"), ARGON2_TIME_COST="3", ARGON2_MEMORY_KIB="65536")
        pid_file = stack.start_replica(inst, "membership", "membership-prodhash", env=env)
        stack.stop_pid_file(stack._pid_file(inst, "membership"))
        try:
            yield
        finally:
            stack.stop_pid_file(pid_file)
            stack.up(inst, quiet=True)
    return swapped()


def _measure_healthz(inst, seconds):
    probe = Latencies(inst.gateway_url + "/healthz")
    probe.start()
    time.sleep(seconds)  # the measurement window
    probe.stop()
    if set(probe.statuses) != {200}:
        raise RuntimeError(f"/healthz answered {sorted(set(map(str, probe.statuses)))!r}")
    return probe


def healthz_under_signups(inst, client, seconds=SECONDS):
    from bench.harness import Figure

    victim = client.signup()["user"]["email"]
    with production_hashing(inst):
        storm = SignupStorm(client.api, victim)
        storm.release()
        try:
            probe = _measure_healthz(inst, seconds)
        finally:
            answered = storm.stop()
    value = p99(probe.samples) * 1000
    median = sorted(probe.samples)[len(probe.samples) // 2] * 1000
    return Figure("healthz_p99_under_signups", value, f"<= {GOAL_MS}",
                  f"(ms; {len(probe.samples)} /healthz, median {median:.1f} ms; {SIGNUP_CLIENTS} sign-up clients, "
                  f"answers {', '.join(f'{n} x {s}' for s, n in sorted(answered.items(), key=str))})")


def healthz_with_slow_connections(inst, seconds=SECONDS):
    from bench.harness import Figure

    attack = SlowClients(inst.gateway_host, inst.gateway_port, headers=SLOW_CONNECTIONS)
    attack.start()
    try:
        time.sleep(1.0)  # the attack's first dribbled lines
        probe = _measure_healthz(inst, seconds)
    finally:
        attack.stop()
    value = p99(probe.samples) * 1000
    return Figure("healthz_p99_slow_connections", value, f"<= {GOAL_MS}",
                  f"(ms; {len(probe.samples)} /healthz, median "
                  f"{sorted(probe.samples)[len(probe.samples) // 2] * 1000:.1f} ms; {SLOW_CONNECTIONS} slow "
                  f"connections, {attack.reopened} reopened)")
