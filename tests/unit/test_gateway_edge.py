"""The fixed work of every answer, done outside Flask's hooks (``gateway/wsgi.py``): the request id,
the security headers, the target limit, the metrics counted in memory and flushed, and the access
line written by hand. Each is checked against what the hooks, ``Histogram.observe`` and
``json.dumps`` gave before."""
import datetime
import json
import re
import uuid

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from common import context, logs
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


def test_an_answer_setting_our_headers_keeps_its_own_policies_but_not_its_request_id():
    from gateway import wsgi

    def app(environ, start_response):
        start_response("200 OK", [("content-security-policy", "mine"), ("X-Request-ID", "from-the-app")])
        return [b""]
    edge = wsgi.Edge(app)
    edge.add_headers(SECURITY_HEADERS)
    answered = []
    edge({"REQUEST_METHOD": "GET", "PATH_INFO": "/", "HTTP_X_REQUEST_ID": "client-1"},
         lambda status, headers, exc_info=None: answered.extend(headers))
    names = [name.lower() for name, _ in answered]
    assert len(names) == len(set(names)) == len(SECURITY_HEADERS) + 1
    assert ("content-security-policy", "mine") in answered and ("X-Request-ID", "client-1") in answered


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


# -- the access line ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def access_log():
    from gunicorn.config import Config

    from gateway.accesslog import RedactingLogger

    cfg = Config()
    cfg.set("accesslog", "-")
    cfg.set("access_log_format", '%(h)s "%(r)s" %(s)s %(b)s %(M)sms')
    return RedactingLogger(cfg)


class Response:
    def __init__(self, status_code, sent, headers=()):
        self.status_code, self.sent, self.headers = status_code, sent, list(headers)


TRICKY = [
    ("GET", "/healthz", "", "/healthz", 200, 16),
    ("GET", "/api/v1/no\u2028such\x85path\"\\\n", "", "/api/v1/no%E2%80%A8such", 404, 88),
    ("POST", "/api/v1/invites/SECRET-TOKEN/accept", "access_token=abc&x=1", "/api/v1/invites/SECRET-TOKEN/accept?"
     "access_token=abc&x=1", 201, None),
    ("GE\"T", "/api/v1/deletions/receipt", "Token=%3C&code=1", "/api/v1/deletions/receipt?Token=%3C&code=1", None, 0),
]


@pytest.mark.parametrize("method,path,query,raw,status,sent", TRICKY)
def test_the_access_line_is_the_json_record_it_was(access_log, method, path, query, raw, status, sent):
    from gateway.accesslog import redact, redact_query

    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query, "RAW_URI": raw,
               "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "10.0.0.7", "orgplatform.request_id": "rid-1"}
    took = datetime.timedelta(microseconds=12345)
    line = access_log._json_access_line(Response(status, sent), None, environ, took)
    assert line.isascii() and "\n" not in line and "SECRET-TOKEN" not in line and "abc" not in line
    record = json.loads(line)
    message = '10.0.0.7 "{}" {} {} 12ms'.format(redact(f"{method} {raw} HTTP/1.1"), status,
                                                 sent if sent is not None else "-")
    expected = logs.json_line("gateway", access_log.access_log.name, "INFO", message, {
        "method": method, "path": redact(path), "query": redact_query(query) or None, "status": status,
        "bytes": sent, "duration_ms": 12.3, "remote": "10.0.0.7", "request_id": "rid-1"})
    timestamp = re.compile(r'"timestamp": "[^"]+"')
    assert timestamp.sub("", line) == timestamp.sub("", expected)  # the same text, key order and escaping
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["timestamp"])
    moment = datetime.datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00"))
    assert abs((datetime.datetime.now(datetime.UTC) - moment).total_seconds()) < 5


@pytest.mark.parametrize("method,path,query,raw,status,sent", TRICKY)
def test_the_default_format_is_written_as_percent_would(method, path, query, raw, status, sent):
    from gateway.accesslog import DEFAULT_FORMAT, _default_message

    line = f"{method} {raw} HTTP/1.1"
    atoms = {"h": "10.0.0.7", "r": line, "s": status, "b": str(sent) if sent is not None else "-", "M": 12}
    assert _default_message("10.0.0.7", line, status, sent, 12.9) == DEFAULT_FORMAT % atoms


def test_another_format_still_works(access_log):
    saved = access_log._format, access_log._message
    access_log._format, access_log._message = "%(m)s %(U)s %(s)s", None
    try:
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/healthz", "QUERY_STRING": "", "RAW_URI": "/healthz",
                   "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "10.0.0.7", "orgplatform.request_id": "rid-2"}
        line = access_log._json_access_line(Response(200, 16, [("X-Request-ID", "rid-2")]), None, environ,
                                            datetime.timedelta(milliseconds=3))
        assert json.loads(line)["message"] == "GET /healthz 200"
    finally:
        access_log._format, access_log._message = saved


def test_redaction_takes_its_shortcut_only_where_nothing_is_redacted():
    from gateway import accesslog

    def always(text):
        text = accesslog._INVITE_TOKEN.sub(r"\1[redacted]", text)
        return accesslog._QUERY.sub(lambda match: match.group(1) + accesslog._redact_pairs(match.group(2)), text)
    for text in ("/healthz", "GET /a/invites/t0k3n?x=1 HTTP/1.1", "/x?token=1#f", "/deletions/r?", "/invites",
                 "/Invites/abc", "?password=p&b=2 HTTP/1.0", "/a/b/c"):
        assert accesslog.redact(text) == always(text), text


# -- CORS ---------------------------------------------------------------------------------------

ORIGIN = "https://app.example.test"


@pytest.fixture(scope="module")
def cors_client():
    return create_app({"AMQP_URI": f"amqp://guest:guest@127.0.0.1:{free_port()}/", "CONSOLE_SESSION_KEY": "unit",
                       "CORS_ALLOWED_ORIGINS": ORIGIN}).test_client()


def test_cors_answers_the_allowed_origin_only_and_always_varies_by_origin(cors_client):
    allowed = cors_client.get("/api/v1/me", headers={"Origin": ORIGIN})
    assert allowed.status_code == 401
    assert allowed.headers.getlist("Access-Control-Allow-Origin") == [ORIGIN]
    assert "Retry-After" in allowed.headers["Access-Control-Expose-Headers"]
    assert allowed.headers.getlist("Vary") == ["Origin"]
    for origin in (None, "https://evil.example.test", "null", ORIGIN + ".evil.test"):
        other = cors_client.get("/healthz", headers={"Origin": origin} if origin else {})
        assert "Access-Control-Allow-Origin" not in other.headers and other.headers["Vary"] == "Origin"
    page = cors_client.get("/login", headers={"Origin": ORIGIN})  # the console varies by Cookie already
    assert page.headers.getlist("Vary") == ["Cookie, Origin"]


def test_a_cors_preflight_names_the_routes_methods(cors_client):
    answer = cors_client.options("/api/v1/auth/login", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"})
    assert answer.status_code == 200
    assert answer.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "POST" in {m.strip() for m in answer.headers["Access-Control-Allow-Methods"].split(",")}
    assert "content-type" in answer.headers["Access-Control-Allow-Headers"].lower()
    assert int(answer.headers["Access-Control-Max-Age"]) > 0
    refused = cors_client.options("/api/v1/auth/login", headers={
        "Origin": "https://evil.example.test", "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Methods" not in refused.headers
