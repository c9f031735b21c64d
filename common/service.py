"""What every service class starts from.

Importing this makes the process's nameko declare no exchange and name its replies after the
service (``common/bus.py``). :class:`Service` carries the dependencies every service has -- the
request and event id of each worker (``common/context.py``), the liveness heartbeat
(``common/liveness.py``) and ``/metrics`` on ``METRICS_PORT`` (``common/metrics.py``); a service adds its store, its
settings and its own providers. It has one
entrypoint, ``ping`` (what readiness checks and tests ask every service), so a service module must
not hold this class under a name of its own: ``nameko run <module>`` takes every class of the module
with an entrypoint for a service. Service modules therefore ``from common import service`` and
subclass ``service.Service``.
"""
from nameko.rpc import rpc

from common import bus
from common.context import RequestContext
from common.liveness import Liveness
from common.metrics import Metrics
from common.validation import checked_rpc

bus.least_privilege()

#: ``@rpc`` for calls whose DomainError is an answer, not a failure; arguments must be Unicode text
domain_rpc = checked_rpc


class Service:
    context = RequestContext()
    liveness = Liveness()  # a heartbeat while the queue consumer consumes (common/liveness.py, common/probe.py)
    metrics = Metrics()

    @rpc
    def ping(self):
        return "pong"
