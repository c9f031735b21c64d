"""The fixed work of every answer, done outside Flask's hooks (``gateway/wsgi.py``): the request id,
the security headers, the target limit, the metrics counted in memory and flushed, and the access
line written by hand. Each is checked against what the hooks, ``Histogram.observe`` and
``json.dumps`` gave before."""
import re
import uuid

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from common import context
from gateway import metrics
from gateway.app import create_app
from gateway.headers import SECURITY_HEADERS
from tests.support import free_port

SEEN = {}


@pytest.fixture(scope="module")
def app():
    app = create_app({"AMQP_URI": f"amqp://guest:guest@127.0.0.1:{free_port()}/", "CONSOLE_SESSION_KEY": "unit"})

    @app.get("/_seen")
    def seen():  # what the app's code sees while it runs
        SEEN["request_id"] = context.request_id()
        return {"ok": True}
    return app


@pytest.fixture(scope="module")
def client(app):
    return app.test_client()


def test_every_answer_carries_the_request_id_and_each_security_header_once(client):
    answers = [client.get("/healthz"), client.get("/api/v1/no-such-thing"), client.delete("/api/v1/auth/login"),
               client.get("/api/v1/" + "x" * 20000), client.get("/api/v1/me")]
    assert [answer.status_code for answer in answers] == [200, 404, 405, 414, 401]
    for answer in answers:
        assert len(answer.headers.getlist("X-Request-ID")) == 1
        assert uuid.UUID(answer.headers["X-Request-ID"]).version == 4
        for name, value in SECURITY_HEADERS.items():
            assert answer.headers.getlist(name) == [value], (answer.request.path, name)
    error = answers[3].get_json()["error"]
    assert error["code"] == "uri_too_long" and set(error) == {"code", "message", "details"}


def test_a_console_page_keeps_its_own_policies_and_gets_the_others(client):
    page = client.get("/login")
    assert page.status_code == 200
    assert len(page.headers.getlist("Content-Security-Policy")) == 1
    assert page.headers["Content-Security-Policy"] != SECURITY_HEADERS["Content-Security-Policy"]
    assert page.headers.getlist("Referrer-Policy") == ["same-origin"]
    assert page.headers.getlist("X-Frame-Options") == ["DENY"] and page.headers["X-Request-ID"]


def test_the_request_id_is_the_clients_well_formed_one_and_bound_while_the_app_runs(client):
    kept = client.get("/_seen", headers={"X-Request-ID": "client-chosen.1"})
    assert kept.headers["X-Request-ID"] == "client-chosen.1" == SEEN["request_id"]
    made = client.get("/_seen", headers={"X-Request-ID": "has space"})
    assert made.headers["X-Request-ID"] == SEEN["request_id"] != "has space"
    assert context.request_id() is None  # unbound once the answer is made


def test_new_request_ids_are_random_version_4_uuids():
    ids = {context.new_request_id() for _ in range(2000)}
    assert len(ids) == 2000
    for value in ids:
        parsed = uuid.UUID(value)
        assert str(parsed) == value and parsed.version == 4 and parsed.variant == uuid.RFC_4122


# -- metrics ------------------------------------------------------------------------------------

class Revocations:
    trusted_since = 1.0

    def size(self):
        return 3


def test_flushed_counts_and_latencies_are_what_observe_would_have_written():
    answers = metrics.Answers(Revocations(), interval=3600)
    route = "/test/flush/<item>"
    samples = [0.0, 0.004, 0.005, 0.0051, 0.3, 2.5, 7.0, 99.0, 0.05, 0.05]
    for seconds in samples:
        answers.observe(route, "GET", 200, seconds)
    answers.observe(route, "GET", 404, 0.001)
    reference = Histogram("reference_seconds", "reference", ["route", "method"], registry=CollectorRegistry(),
                          buckets=metrics.LATENCY._upper_bounds)
    for seconds in samples + [0.001]:
        reference.labels(route, "GET").observe(seconds)
    answers.flush()
    answers.flush()  # nothing left: nothing added twice
    assert metrics.REQUESTS.labels(route, "GET", "200")._value.get() == len(samples)
    assert metrics.REQUESTS.labels(route, "GET", "404")._value.get() == 1
    flushed, expected = metrics.LATENCY.labels(route, "GET"), reference.labels(route, "GET")
    assert [value.get() for value in flushed._buckets] == [value.get() for value in expected._buckets]
    assert flushed._sum.get() == pytest.approx(expected._sum.get())


def test_a_scrape_counts_the_answers_before_it_by_route_template(client):
    client.get("/api/v1/organizations/some-org")
    client.get("/api/v1/organizations/other-org")
    text = client.get("/metrics").get_data(as_text=True)

    def value(name, **labels):
        wanted = ",".join(f'{key}="{re.escape(val)}"' for key, val in sorted(labels.items()))
        pattern = name + r"\{" + wanted + r"\} (\S+)"
        found = re.search(pattern, text)
        return float(found.group(1)) if found else 0.0
    assert value("gateway_http_requests_total", method="GET", route="/api/v1/organizations/<org_id>",
                 status="401") >= 2
    assert value("gateway_http_request_seconds_count", method="GET", route="/api/v1/organizations/<org_id>") >= 2
    assert "some-org" not in text


def test_429s_are_counted_at_once():
    answers = metrics.Answers(Revocations(), interval=3600)
    before = metrics.RATE_LIMITED.labels("/test/limited")._value.get()
    answers.observe("/test/limited", "POST", 429, 0.001)
    assert metrics.RATE_LIMITED.labels("/test/limited")._value.get() == before + 1
    assert "gateway_rate_limited_total" in generate_latest().decode()
