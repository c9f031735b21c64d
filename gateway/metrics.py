"""Prometheus metrics of the gateway, served at ``GET /metrics`` on gunicorn's private port only.

gunicorn runs several worker processes; with ``PROMETHEUS_MULTIPROC_DIR`` set (the stack sets it
to ``var/<instance>/prometheus`` and empties it before gunicorn starts) every worker writes its
values to files there and a scrape of any worker sums them (prometheus-client's multiprocess
mode; ``gunicorn.conf.py`` marks exited workers dead). Without it each worker answers for itself.

``/metrics`` answers 404 to requests that came through the proxy (they carry ``X-Real-IP``, which
nginx always sets): metrics are for the operator's scraper on the private port, not the internet.
Counters are labelled by route *template* (``/api/v1/organizations/<org_id>``), never the raw
path, so ids neither leak into metrics nor multiply series.
"""
import os
import time

from flask import Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

PATH = "/metrics"
REQUESTS = Counter("gateway_http_requests_total", "HTTP requests answered, by route template, method and "
                   "status", ["route", "method", "status"])
LATENCY = Histogram("gateway_http_request_seconds", "Time from the request reaching the app to its answer, "
                    "by route template", ["route", "method"])
RPC_CALLS = Counter("gateway_rpc_calls_total", "RPC calls to the services, by outcome (ok; refused: a "
                    "domain error such as 404/409; unavailable: timeout or broker trouble, a 503; error: "
                    "the service failed)", ["service", "method", "outcome"])
RPC_SECONDS = Histogram("gateway_rpc_seconds", "RPC latency seen by the gateway", ["service", "method"])
RATE_LIMITED = Counter("gateway_rate_limited_total", "Requests refused with 429 (rate limits, the export "
                       "bulkhead), by route template", ["route"])
REVOCATION_ENTRIES = Gauge("gateway_revocation_list_entries", "Revoked sessions and cut-offs a worker "
                           "holds in memory (one series per live worker: pid)", multiprocess_mode="liveall")
LISTENER_CONNECTED = Gauge("gateway_revocation_listener_connected", "1 while a worker's revocation listener "
                           "is connected to the broker, else 0 (one series per live worker: pid)",
                           multiprocess_mode="liveall")
OVERVIEW_READS = Counter("gateway_overview_reads_total", "Organization overviews answered, by where the answer "
                         "came from (hit: the worker's memory; miss: the org service)", ["outcome"])


_enabled = True


def observe_overview(hit):
    if _enabled:
        OVERVIEW_READS.labels("hit" if hit else "miss").inc()


def observe_rpc(service, method, outcome, seconds):
    if not _enabled:
        return
    RPC_CALLS.labels(service, method, outcome).inc()
    RPC_SECONDS.labels(service, method).observe(seconds)


def _route():
    rule = request.url_rule
    return rule.rule if rule is not None else "unmatched"


def _registry():
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


def init_app(app, revocations, enabled=True):
    """Count every answer and serve ``/metrics``; ``revocations`` is the worker's RevocationList.
    ``enabled`` false (``METRICS_ENABLED=0``, only to measure what metrics cost: ``make bench``)
    registers nothing and counts nothing."""
    global _enabled
    _enabled = enabled
    if not enabled:
        return

    @app.before_request
    def start_clock():
        g.metrics_started = time.perf_counter()

    answered = {}  # (route, method, status) -> (requests counter, latency histogram): labels() once each
    gauges = {}  # the gauges' last values: set (a write to the shared file) only when one changes

    @app.after_request
    def count(response):
        key = (_route(), request.method, response.status_code)
        series = answered.get(key)
        if series is None:
            route, method, status = key
            series = answered[key] = (REQUESTS.labels(route, method, str(status)), LATENCY.labels(route, method))
        series[0].inc()
        started = g.get("metrics_started")
        if started is not None:
            series[1].observe(time.perf_counter() - started)
        if response.status_code == 429:
            RATE_LIMITED.labels(key[0]).inc()
        for gauge, value in ((REVOCATION_ENTRIES, revocations.size()),
                             (LISTENER_CONNECTED, 1 if revocations.trusted_since is not None else 0)):
            if gauges.get(gauge) != value:
                gauges[gauge] = value
                gauge.set(value)
        return response

    @app.get(PATH)
    def metrics():
        if "X-Real-IP" in request.headers:  # came through nginx: not for the public
            return Response('{"error": {"code": "not_found", "message": "not found", "details": {}}}', 404,
                            mimetype="application/json")
        return Response(generate_latest(_registry()), mimetype=CONTENT_TYPE_LATEST)
