"""``common/nameko_private.py`` uses nameko internals; these tests pin the version it was written
against and check each internal it relies on is still there, in the shape it assumes."""
import inspect
from importlib.metadata import version

from nameko import rpc
from nameko.events import EventHandler
from nameko.standalone.rpc import ClusterRpcProxy
from nameko.timer import Timer

from common import nameko_private, subscriptions, topology
from common.timers import ConfiguredTimer


def test_nameko_is_the_version_the_internals_were_read_from():
    assert version("nameko") == nameko_private.NAMEKO_VERSION


def test_our_event_queue_names_are_the_ones_nameko_declares():
    assert '"evt-{}-{}--{}.{}".format(self.source_service,' in inspect.getsource(EventHandler.setup)
    assert nameko_private.event_queue_name("org", "plan_changed", "usage", "on_plan_changed") == \
        "evt-org-plan_changed--usage.on_plan_changed"
    subscription = subscriptions.Subscription(("org", "plan_changed"), "usage", "on_plan_changed")
    assert topology.queue_name(subscription) == "evt-org-plan_changed--usage.on_plan_changed"


def test_the_timer_loop_we_replace_is_timers_run():
    assert "def _run(self)" in inspect.getsource(Timer)
    assert ConfiguredTimer._run is nameko_private.PacedTimer._run is not Timer._run
    source = inspect.getsource(Timer)
    assert all(f"self.{name}" in source for name in ("should_stop", "worker_complete", "eager", "interval"))


def test_a_standalone_proxy_keeps_its_worker_context_and_reply_listener_where_we_read_them():
    base = inspect.getsource(ClusterRpcProxy.__mro__[1])  # StandaloneProxyBase sets them up
    assert "self._worker_ctx = " in base and "self._reply_listener = " in base
    assert "ClusterProxy(self._worker_ctx, self._reply_listener)" in inspect.getsource(ClusterRpcProxy)


def test_the_consume_loop_calls_on_iteration_after_each_round():
    from kombu.mixins import ConsumerMixin
    from nameko.messaging import QueueConsumer

    assert issubclass(QueueConsumer, ConsumerMixin)
    assert "self.on_iteration()" in inspect.getsource(ConsumerMixin.consume)


def test_the_reply_listener_and_rpc_exchange_we_patch_exist():
    assert callable(rpc.get_rpc_exchange) and callable(rpc.ReplyListener.setup)
    assert "{}" in rpc.RPC_REPLY_QUEUE_TEMPLATE and rpc.RPC_REPLY_QUEUE_TTL
