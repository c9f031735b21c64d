"""Prometheus metrics of the services (the gateway's are in ``gateway/metrics.py``).

Every service process serves ``/metrics`` on its own port (``METRICS_PORT`` in its ``config.yml``;
empty: none) through :class:`Metrics`, declared once on every service class. Counters are moved
where things happen (RPC calls and events by the worker hook here, retries and parking in
``common.handlers``, mail attempts in the notifications dispatcher, ledger writes in usage, purges
in each service's deletion module); backlogs are read from the database when scraped (the outbox
of every ``OUTBOX_COLLECTIONS``, the mail queue), bounded, so a scrape costs a few indexed reads.

A second replica on the same machine finds its port taken: it logs that and serves no metrics
(give replicas their own ``<SERVICE>_METRICS_PORT``).
"""
import logging
import time
from datetime import UTC, datetime

from nameko.events import EventHandler
from nameko.extensions import DependencyProvider
from nameko.rpc import Rpc
from prometheus_client import REGISTRY, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily

from common.settings_provider import settings_of

log = logging.getLogger(__name__)

RPC_CALLS = Counter("orgplatform_rpc_calls_total", "RPC calls a service handled, by outcome "
                    "(ok; refused: an expected domain error such as 404/409/422; failed: anything else)",
                    ["service", "method", "outcome"])
RPC_SECONDS = Histogram("orgplatform_rpc_handler_seconds", "Time a service spent on an RPC call",
                        ["service", "method"])
EVENTS = Counter("orgplatform_events_total", "Events a handler took, by outcome (handled; retried: "
                 "failed and sent to its retry queue; parked: failed for the last time)",
                 ["service", "handler", "outcome"])
MAIL = Counter("orgplatform_mail_attempts_total", "SMTP attempts of the notifications service by "
               "outcome (sent, temporary_failure, permanent_failure)", ["outcome"])
LEDGER_WRITES = Counter("orgplatform_ledger_writes_total", "Credit ledger entries the usage service "
                        "appended, by kind (grant, reservation, settlement, refund, expiry)", ["kind"])
PURGE_SECONDS = Histogram("orgplatform_purge_seconds", "Time one service took to purge one deleted "
                          "organization", ["service"], buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600))


def count_event(service, handler, outcome):
    EVENTS.labels(service, handler, outcome).inc()


class _Backlogs:
    """Scrape-time gauges read from the service's database (outbox; for notifications the mail queue)."""

    def __init__(self, service, container):
        self.service, self.container = service, container

    def describe(self):
        return []  # registering must not read the database (the store is set up after this)

    def _store(self):
        """The service's store (``common.mongo.StoreProvider``), found among its dependencies."""
        return next((dep.store for dep in self.container.dependencies
                     if getattr(dep, "store", None) is not None and hasattr(dep.store, "outbox_backlog")), None)

    def collect(self):
        store = self._store()
        if store is None:
            return []
        outbox_count = GaugeMetricFamily("orgplatform_outbox_backlog", "Documents holding events not yet "
                                         "published (normally 0; the sweep publishes what a crash left)",
                                         labels=["service"])
        outbox_age = GaugeMetricFamily("orgplatform_outbox_oldest_seconds", "Age of the oldest event waiting "
                                       "in the outbox (0 when none waits)", labels=["service"])
        families = [outbox_count, outbox_age]
        try:
            pending, oldest = store.outbox_backlog()
            outbox_count.add_metric([self.service], pending)
            age = (datetime.now(UTC) - oldest).total_seconds() if oldest else 0.0
            outbox_age.add_metric([self.service], max(age, 0.0))
            if self.service == "notifications":
                depth = GaugeMetricFamily("orgplatform_mail_queue_depth", "Mail recorded and not final yet "
                                          "(being sent, or waiting for a retry)")
                retrying = GaugeMetricFamily("orgplatform_mail_retry_backlog", "Queued mail that failed at "
                                             "least once and waits for its next attempt")
                queued, retried = store.mail_queue_depth()
                depth.add_metric([], queued)
                retrying.add_metric([], retried)
                families += [depth, retrying]
        except Exception:  # the database may be down; the scrape still answers the counters
            log.warning("could not read backlogs for metrics", exc_info=True)
            return []
        return families


class Metrics(DependencyProvider):
    """Serves ``/metrics`` on ``METRICS_PORT`` and counts every RPC call and event handled."""

    def setup(self):
        settings = settings_of(self.container)
        self.service = self.container.service_name
        port, address = settings.metrics_port, settings.metrics_address
        self.port = None
        self.enabled = settings.metrics_enabled
        if not port or not self.enabled:  # METRICS_ENABLED=0: only `make bench`, measuring the cost
            return
        try:
            start_http_server(port, addr=address)
        except OSError as error:
            log.warning("metrics port %s unavailable (%s): this process serves no metrics", port, error)
            return
        self.port = port
        self.backlogs = _Backlogs(self.service, self.container)
        REGISTRY.register(self.backlogs)
        log.info("metrics on http://%s:%s/metrics", address, port)

    def worker_setup(self, worker_ctx):
        worker_ctx.orgplatform_metrics_started = time.monotonic()

    def worker_result(self, worker_ctx, result=None, exc_info=None):
        if not self.enabled:
            return
        entrypoint = worker_ctx.entrypoint
        method = entrypoint.method_name
        if isinstance(entrypoint, Rpc):
            outcome = "ok"
            if exc_info is not None:
                outcome = "refused" if isinstance(exc_info[1], entrypoint.expected_exceptions) else "failed"
            RPC_CALLS.labels(self.service, method, outcome).inc()
            started = getattr(worker_ctx, "orgplatform_metrics_started", None)
            if started is not None:
                RPC_SECONDS.labels(self.service, method).observe(time.monotonic() - started)
        elif isinstance(entrypoint, EventHandler) and exc_info is None:
            count_event(self.service, method, "handled")  # failures: retried/parked (common.handlers)
