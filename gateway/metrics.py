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
import atexit
import bisect
import collections
import logging
import os
import threading
import time

from flask import Response, request
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

from gateway import wsgi

log = logging.getLogger("gateway")

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


def _registry():
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


class Answers:
    """Every answer counted in memory and written to the Prometheus values once a second.

    In multiprocess mode each ``inc``/``observe``/``set`` is a locked write to the worker's
    memory-mapped file that first checks the pid; three of them per request cost about as much as
    Flask's whole ``/healthz``. The middleware (``gateway/wsgi.py``) calls :meth:`observe`, which only
    appends a tuple to a deque (atomic in CPython: no lock, no lost count between threads); a daemon
    thread (:meth:`flush`, every ``interval`` seconds) sums them and adds each series' total to the
    counter and each latency to its bucket, the same values ``observe`` would have written. Also
    flushed: by the worker's own ``/metrics`` answer before it reads the files, and at worker exit
    (``worker_exit`` in ``gunicorn.conf.py``, and ``atexit``). So a scrape lags at most ``interval``
    seconds behind the other workers' answers (and a worker killed outright loses at most its last
    ``interval`` seconds); 429s are counted at once in ``gateway_rate_limited_total`` (rare, and an
    operator watching a limit wants them now), the workers' gauges at each flush."""

    def __init__(self, revocations, interval=1.0):
        self._revocations, self._interval = revocations, interval
        self._pending = collections.deque()
        self._series = {}  # (route, method, status) -> requests counter; (route, method) -> latency histogram
        self._gauges = {}  # the gauges' last values: set (a write to the shared file) only when one changes
        self._lock = threading.Lock()  # one flush at a time
        self._flusher = None
        os.register_at_fork(after_in_child=self._forked)

    def _forked(self):
        """A forked child starts its own flusher and leaves the parent's pending answers to it."""
        self._pending, self._lock, self._flusher = collections.deque(), threading.Lock(), None

    def observe(self, route, method, status, seconds):
        self._pending.append((route, method, status, seconds))
        if status == 429:
            RATE_LIMITED.labels(route).inc()
        if self._flusher is None:
            self._start()

    def _start(self):
        with self._lock:
            if self._flusher is None:
                self._flusher = threading.Thread(target=self._run, name="metrics-flush", daemon=True)
                self._flusher.start()

    def _run(self):
        while True:
            time.sleep(self._interval)
            try:
                self.flush()
            except Exception:  # never let the counts pile up in memory because one flush failed
                log.exception("metrics flush failed")

    def flush(self):
        with self._lock:
            counts, latencies = {}, {}
            bounds = LATENCY._upper_bounds
            pending = self._pending
            while pending:
                route, method, status, seconds = pending.popleft()
                key = (route, method, status)
                counts[key] = counts.get(key, 0) + 1
                latency = latencies.get(key[:2])
                if latency is None:
                    latency = latencies[key[:2]] = [0.0, [0] * len(bounds)]
                latency[0] += seconds
                latency[1][bisect.bisect_left(bounds, seconds)] += 1  # Histogram.observe: first bound >= value
            for key, count in counts.items():
                counter = self._series.get(key)
                if counter is None:
                    counter = self._series[key] = REQUESTS.labels(key[0], key[1], str(key[2]))
                counter.inc(count)
            for key, (total, buckets) in latencies.items():
                histogram = self._series.get(key)
                if histogram is None:
                    histogram = self._series[key] = LATENCY.labels(*key)
                _add_to_histogram(histogram, total, buckets)
            for gauge, value in ((REVOCATION_ENTRIES, self._revocations.size()),
                                 (LISTENER_CONNECTED, 1 if self._revocations.trusted_since is not None else 0)):
                if self._gauges.get(gauge) != value:
                    self._gauges[gauge] = value
                    gauge.set(value)


def _add_to_histogram(histogram, total, buckets):
    """Add ``sum(buckets)`` observations totalling ``total`` to one labelled histogram, ``buckets[i]``
    of them in bucket ``i`` (not cumulative), as that many ``observe`` calls would: prometheus-client
    (pinned) keeps a value per bucket and one for the sum and has no public call for this;
    ``tests/unit/test_gateway_edge.py`` checks the result against ``observe``."""
    histogram._sum.inc(total)
    for index, count in enumerate(buckets):
        if count:
            histogram._buckets[index].inc(count)


_answers = []  # every app's Answers in this process, for flush_all


def flush_all():
    """Write every app's pending counts (a worker about to exit)."""
    for answers in _answers:
        answers.flush()


atexit.register(flush_all)


def init_app(app, revocations, enabled=True):
    """Count every answer and serve ``/metrics``; ``revocations`` is the worker's RevocationList.
    ``enabled`` false (``METRICS_ENABLED=0``, only to measure what metrics cost: ``make bench``)
    registers nothing and counts nothing."""
    global _enabled
    _enabled = enabled
    if not enabled:
        return
    answers = Answers(revocations)
    _answers.append(answers)
    wsgi.install(app).observe = answers.observe  # the middleware times and counts every answer

    @app.get(PATH)
    def metrics():
        if "X-Real-IP" in request.headers:  # came through nginx: not for the public
            return Response('{"error": {"code": "not_found", "message": "not found", "details": {}}}', 404,
                            mimetype="application/json")
        answers.flush()  # this worker's counts are exact; the others' lag at most one flush interval
        return Response(generate_latest(_registry()), mimetype=CONTENT_TYPE_LATEST)
