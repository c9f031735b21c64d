"""Helpers for end-to-end tests: an HTTP client for the gateway, condition polling, the bus, the mail sink."""
import contextlib
import email
import email.policy
import os
import socket
import time
import uuid

import pytest
import requests

#: lines a test wants at the end of the pytest output (printed by conftest's terminal summary)
SUMMARY = pytest.StashKey[list]()


def wait_until(check, timeout=10.0, interval=0.05, what="condition"):
    """Poll ``check`` until it returns a truthy value; fail after ``timeout`` seconds. ``what`` may be
    a callable, asked at the failure (e.g. how far the awaited work got)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    described = what() if callable(what) else what
    raise AssertionError(f"timed out after {timeout:.1f}s waiting for {described} (last value: {last!r})")


def run_together(target, arguments, timeout=None):
    """Run ``target(*args)`` for each of ``arguments`` in a thread of its own and wait for all (the
    racers of a race test; they meet at a barrier of their own to start together)."""
    import threading

    threads = [threading.Thread(target=target, args=args) for args in arguments]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)


SUPERUSER = {"email": "superuser@example.test", "password": "superuser-test-password"}  # see stack.py


_superuser_tokens = {}  # gateway URL -> (access token, when it was issued)


def superuser_token(gateway):
    """An access token of the operator account the test stack creates at start.

    Reused for a minute: every login counts against the per-email limit (10 a minute), which a suite
    that logged the operator in for every check would run into."""
    token, issued = _superuser_tokens.get(gateway.base_url, (None, 0.0))
    if token is not None and time.monotonic() - issued <= 60 and gateway.get("/me", token).status_code != 200:
        token = None  # revoked meanwhile (the isolation matrix changes the operator's password and back)
    if token is None or time.monotonic() - issued > 60:
        response = gateway.post("/auth/login", SUPERUSER)
        assert response.status_code == 200, response.text
        token, issued = response.json()["access_token"], time.monotonic()
        _superuser_tokens[gateway.base_url] = (token, issued)
    return token


def unique_email(prefix="user"):
    return f"{prefix}-{uuid.uuid4().hex[:12]}@example.test"


class Gateway:
    def __init__(self, base_url):
        self.base_url = base_url
        self.api = base_url + "/api/v1"
        self.http = requests.Session()

    def request(self, method, path, token=None, json=None, data=None, headers=None, timeout=15):
        headers = dict(headers or {})
        if token:
            headers["Authorization"] = "Bearer " + token
        url = path if path.startswith("http") else self.api + path
        return self.http.request(method, url, json=json, data=data, headers=headers, timeout=timeout)

    def get(self, path, token=None, **kw):
        return self.request("GET", path, token, **kw)

    def post(self, path, json=None, token=None, **kw):
        return self.request("POST", path, token, json=json, **kw)

    def patch(self, path, json=None, token=None, **kw):
        return self.request("PATCH", path, token, json=json, **kw)

    def delete(self, path, json=None, token=None, **kw):
        return self.request("DELETE", path, token, json=json, **kw)

    def signup(self, organization_name="Test Lab", email=None, password="correct horse battery",
               name="Test User"):
        body = {"email": email or unique_email(), "password": password, "name": name}
        if organization_name is not None:
            body["organization_name"] = organization_name
        response = self.post("/auth/signup", body)
        assert response.status_code == 201, response.text
        return Account(response.json(), password)


class Account:
    def __init__(self, data, password):
        self.data = data
        self.password = password
        self.token = data["access_token"]
        self.refresh_token = data["refresh_token"]
        self.user_id = data["user"]["id"]
        self.email = data["user"]["email"]
        self.org_id = (data.get("organization") or {}).get("id")


def assert_error(response, status, code=None):
    """The contract's error shape, with the expected status (and code)."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]


def envelope_problems(message, body):
    """What is wrong with an event's AMQP envelope (README, Events; ``common/envelope.py``): the
    properties and CloudEvents application properties every published event carries."""
    from common.envelope import unix_seconds

    properties, headers = message.properties, message.headers or {}
    exchange, routing_key = message.delivery_info["exchange"], message.delivery_info["routing_key"]
    source = exchange[:-len(".events")] if exchange.endswith(".events") else exchange
    event_id = body.get("event_id") if isinstance(body, dict) else None
    expected = {
        "message_id": event_id, "type": routing_key, "app_id": source, "content_type": "application/json",
        "cloudEvents:specversion": "1.0", "cloudEvents:id": event_id, "cloudEvents:source": "/orgplatform/" + source,
        "cloudEvents:type": routing_key,
        "cloudEvents:time": body.get("occurred_at") if isinstance(body, dict) else None,
    }
    seen = dict(properties, **headers)
    problems = [f"{key} is {seen.get(key)!r}, not {value!r}" for key, value in expected.items()
                if seen.get(key) != value]
    try:
        if str(uuid.UUID(event_id)) != event_id:
            problems.append(f"event_id {event_id!r} is not a hyphenated uuid")
    except (TypeError, ValueError):
        problems.append(f"event_id {event_id!r} is not a uuid")
    try:
        if properties.get("timestamp") != unix_seconds(body["occurred_at"]):
            problems.append(f'timestamp {properties.get("timestamp")!r} is not occurred_at {body["occurred_at"]!r}')
    except (KeyError, TypeError, ValueError):
        problems.append("no occurred_at to check the timestamp against")
    return [f"{routing_key} {event_id}: {problem}" for problem in problems]


class EventTap:
    """Listens to the bus like any outside subscriber would: its own exclusive queue, bound to
    every event type of the given sources. Reconnects (with a new queue) if the broker restarts.

    It checks every event's envelope on the way (:func:`envelope_problems`); the session's tap
    fails the run if any event lacked one, except those a test published bare on purpose
    (:meth:`allow_bare`, an older publisher's event)."""

    def __init__(self, amqp_uri, sources=("org", "membership", "usage", "notifications", "audit")):
        self.amqp_uri = amqp_uri
        self.sources = sources
        self.events = []
        self.messages = []  # (routing key, body, properties, headers) of every event seen
        self.problems = []
        self.bare = set()
        self.connection = None
        self.reconnect()

    def allow_bare(self, event_id):
        self.bare.add(event_id)

    def envelope_problems(self):
        """Problems of every event seen so far, but those allowed to be bare."""
        return [problem for event_id, problem in self.problems if event_id not in self.bare]

    def reconnect(self):
        """A new connection and queue (events published meanwhile are not seen)."""
        from kombu import Connection, Queue

        from common.topology import event_exchange

        if self.connection is not None:
            try:
                self.connection.release()
            except Exception:  # the old connection is dead anyway
                pass
        self.connection = Connection(self.amqp_uri)
        channel = self.connection.channel()
        queue = Queue(f"test-tap-{uuid.uuid4().hex}", exclusive=True, auto_delete=True, durable=False,
                      channel=channel)
        queue.declare()
        for source in self.sources:
            event_exchange(source)(channel).declare()
            queue.bind_to(exchange=event_exchange(source), routing_key="#")
        self.consumer = self.connection.Consumer(queue, channel=channel, callbacks=[self._collect],
                                                 accept=["json"])
        self.consumer.consume()

    def _collect(self, body, message):
        self.events.append((message.delivery_info["routing_key"], body))
        self.messages.append((message.delivery_info["routing_key"], body, dict(message.properties),
                              dict(message.headers or {})))
        event_id = body.get("event_id") if isinstance(body, dict) else None
        self.problems.extend((event_id, problem) for problem in envelope_problems(message, body))
        message.ack()

    def _drain(self, timeout):

        try:
            self.connection.drain_events(timeout=timeout)
        except TimeoutError:
            pass  # nothing arrived yet
        except Exception:  # the broker went away (e.g. a fault test restarted it): listen anew
            self.reconnect()

    def wait_for(self, event_type, timeout=10.0, **match):
        """The first event of ``event_type`` whose fields equal ``match``."""
        deadline = time.monotonic() + timeout
        while True:
            for kind, body in self.events:
                if kind == event_type and all(body.get(k) == v for k, v in match.items()):
                    return body
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {event_type} event matching {match!r} within {timeout:.1f}s")
            self._drain(min(remaining, 0.2))

    def all(self, event_type, **match):
        self._drain(0.2)
        return [body for kind, body in self.events
                if kind == event_type and all(body.get(k) == v for k, v in match.items())]

    def close(self):
        self.connection.release()


def invite(gateway, tap, admin, email, role="member", org_id=None):
    """Invite ``email``; returns (token, invite id), the token read from the invite_created event."""
    org_id = org_id or admin.org_id
    response = gateway.post(f"/organizations/{org_id}/invites", {"emails": [email], "role": role}, admin.token)
    assert response.status_code == 201, response.text
    invite_id = response.json()["items"][0]["id"]
    event = tap.wait_for("invite_created", invite_id=invite_id)
    return event["accept_url"].rsplit("/", 1)[1], invite_id


def new_team(gateway, tap, organization_name, owner_email=None):
    """An organization with an owner, an admin, a dataset manager and a member, plus an outsider
    (the admin of another organization): ``{"owner": Account, "admin": ..., "outsider": ...}``."""
    owner = gateway.signup(organization_name=organization_name, name="Olivia Owner", email=owner_email)
    members = {"owner": owner}
    for role in ("admin", "dataset_manager", "member"):
        members[role] = join(gateway, tap, owner, role, name=f"{role} person")
    members["outsider"] = gateway.signup(organization_name="Other Lab", name="Oscar Outsider")
    return members


def join(gateway, tap, admin, role, name=None, org_id=None):
    """A new account that signed up through an invite with ``role``."""
    email = unique_email(role)
    token, _ = invite(gateway, tap, admin, email, role, org_id)
    password = "correct horse battery"
    response = gateway.post("/auth/signup", {"email": email, "password": password, "name": name or role.title(),
                                             "invite_token": token})
    assert response.status_code == 201, response.text
    return Account(response.json(), password)


MAIL_TIMEOUT = 20


class Mail:
    def __init__(self, raw):
        self.raw = raw
        self.message = email.message_from_bytes(raw, policy=email.policy.default)
        self.rcpt_to = [a.strip() for a in self.message["X-Sink-Rcpt-To"].split(",")]
        self.subject = self.message["Subject"]
        self.text = self.message.get_body(("plain",)).get_content()
        self.html = self.message.get_body(("html",)).get_content()

    def __repr__(self):
        return f"<Mail to={self.rcpt_to} subject={self.subject!r}>"


class Mailbox:
    """Everything the test instance's SMTP sink received."""

    def __init__(self, directory):
        self.directory = directory
        self._seen = {}
        # mail of earlier sessions stays in the directory: only what arrives from now on counts
        self._old = set(os.listdir(directory)) if os.path.isdir(directory) else set()

    def all(self):
        if os.path.isdir(self.directory):
            for name in sorted(os.listdir(self.directory)):
                if (name.endswith(".eml") and not name.startswith(".") and name not in self._seen
                        and name not in self._old):
                    with open(os.path.join(self.directory, name), "rb") as handle:
                        self._seen[name] = Mail(handle.read())
        return list(self._seen.values())

    def to(self, address, contains=None):
        return [m for m in self.all() if address in m.rcpt_to
                and (contains is None or contains in m.subject or contains in m.text)]

    def wait(self, address, contains=None, count=1, timeout=MAIL_TIMEOUT):
        return wait_until(lambda: len(self.to(address, contains)) >= count and self.to(address, contains),
                          timeout=timeout, what=f"{count} mail(s) to {address} {contains!r}")

    def recipients(self, contains):
        return sorted(r for m in self.all() if contains in m.subject or contains in m.text for r in m.rcpt_to)


def service_config(test_stack, service):
    """``services/<service>/config.yml`` as the instance runs it (its environment substituted), so a
    test agrees with a configured value (a limit, a TTL, a public URL) instead of repeating a default."""
    from unittest import mock

    import yaml
    from nameko.cli.main import IMPLICIT_ENV_VAR_MATCHER, env_var_constructor

    class Loader(yaml.SafeLoader):  # nameko's !env_var syntax, without changing yaml.SafeLoader for others
        pass

    Loader.add_constructor("!env_var", env_var_constructor)
    Loader.add_implicit_resolver("!env_var", IMPLICIT_ENV_VAR_MATCHER, None)
    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "services", service, "config.yml")
    with mock.patch.dict(os.environ, test_stack.service_env(), clear=True), open(path) as handle:
        return yaml.load(handle, Loader=Loader)


def gateway_workers(test_stack):
    """Pids of the gateway's gunicorn workers: the children of the master named in its pid file."""
    from stack import stack

    master = stack.read_pid(stack._pid_file(test_stack, "gateway"))
    workers = set()
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as handle:
                parent = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # not a process, or it just exited
        if parent == master:
            workers.add(int(entry))
    return workers


def _serving_worker(server_port, client_port, workers):
    """Which of ``workers`` holds the server end of the local TCP connection from ``client_port``."""
    sockets = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as handle:
            for line in list(handle)[1:]:
                fields = line.split()
                if (int(fields[1].rsplit(":", 1)[1], 16) == server_port
                        and int(fields[2].rsplit(":", 1)[1], 16) == client_port):
                    sockets.add(f"socket:[{fields[9]}]")
    for pid in workers:
        try:
            descriptors = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in descriptors:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in sockets:
                    return pid
            except OSError:
                continue
    return None


def on_new_connections(test_stack, path, token, minimum=20, timeout=30.0):
    """GET ``path`` with ``token``, each request on a new TCP connection, until at least ``minimum``
    were sent and every gateway worker has answered one; returns ``[(worker pid, status, body)]``.

    A kept-alive session sticks to one worker; this shows what *every* gateway process answers
    (e.g. that each one has applied a revocation), naming the worker that served each request.
    The connections go to gunicorn's private port, behind nginx: through the proxy, the worker
    holding a connection is nginx's business (its upstream connections), not the client's.
    """
    import http.client
    import json

    workers = gateway_workers(test_stack)
    assert len(workers) >= 2, f"expected several gateway workers, found {workers!r}"
    answers = []
    deadline = time.monotonic() + timeout
    while len(answers) < minimum or {pid for pid, _, _ in answers} != workers:
        if time.monotonic() > deadline:
            raise AssertionError(f"after {len(answers)} new connections in {timeout:.0f}s, workers "
                                 f"{sorted({a[0] for a in answers}, key=str)!r} answered, of {workers!r}")
        connection = http.client.HTTPConnection("127.0.0.1", test_stack.upstream_port, timeout=15)
        try:
            connection.request("GET", "/api/v1" + path, headers={"Authorization": "Bearer " + token})
            response = connection.getresponse()
            body = json.loads(response.read())
            # the server keeps the connection open (keep-alive) until we close it: look it up now
            worker = _serving_worker(test_stack.upstream_port, connection.sock.getsockname()[1], workers)
        finally:
            connection.close()
        answers.append((worker, response.status, body))
    return answers


def error_codes(answers):
    """``{(status, error code or None)}`` of :func:`on_new_connections` answers."""
    return {(status, body.get("error", {}).get("code") if isinstance(body, dict) else None)
            for _, status, body in answers}


def assert_every_worker_answers(test_stack, path, token, status, code=None, minimum=20):
    """Each of ``minimum``+ requests, on new connections reaching every gateway worker, answers
    ``status`` (and error ``code``): e.g. a revocation has reached every process, not just one."""
    answers = on_new_connections(test_stack, path, token, minimum)
    unexpected = [answer for answer in answers if error_codes([answer]) != {(status, code)}]
    assert not unexpected, f"{len(unexpected)} of {len(answers)} answers were not {status} {code}: {unexpected[:3]!r}"
    return answers


def free_port():
    """A loopback TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def side_gateway(test_stack, label, component="gateway", **env):
    """A second gateway (gunicorn, one worker) on a free port of its own, with ``env`` on top of the
    test stack's settings (``component``: its broker user, None for the instance's admin); yields a
    ``Gateway`` once it answers ``/healthz`` and stops it afterwards."""
    from stack import stack
    port = free_port()
    settings = dict(test_stack.service_env(component), GATEWAY_BIND=f"127.0.0.1:{port}", GATEWAY_WORKERS="1",
                    **env)
    name = "gateway-" + label
    stack.spawn(name, [os.path.join(stack.VENV_BIN, "gunicorn"), "-c", os.path.join(stack.ROOT, "gateway",
                                                                                 "gunicorn.conf.py"),
                       "gateway.app:create_app()"], test_stack.run_dir, test_stack.log_dir, settings)
    try:
        side = Gateway(f"http://127.0.0.1:{port}")

        def healthy():
            try:
                return requests.get(side.base_url + "/healthz", timeout=2).status_code == 200
            except OSError:
                return False
        wait_until(healthy, timeout=60, interval=0.2, what=f"the {label} gateway to start")
        yield side
    finally:
        stack.stop_pid_file(os.path.join(test_stack.run_dir, name + ".pid"))
