"""The floor under ``ledger_vs_insert``: what the reservation's hops cost with nothing else on them.

A reservation in this design is an HTTP request to the gateway, an RPC over RabbitMQ to the service
that owns the ledger, a write there, and the fact published as an event to the services that keep
a copy (the organization's overview, the audit log). ``bench/floor_service.py`` is that shape with
every piece of logic taken out: stock nameko, one RPC that writes one document with ``insert_one``
(or nothing) and dispatches one event that two subscribers receive and drop. No gateway, no
validation, no idempotency, no balance guard, no outbox, no read, no consumer writes.

Its calls per second over the same run's bare inserts per second is the best ``ledger_vs_insert``
any implementation of the design could reach on this machine: the real path adds to each hop. It
runs in a vhost of its own on the instance's broker, made for it and deleted after, with classic
queues (stock nameko's standalone RPC proxy declares an exclusive reply queue, which a quorum
vhost refuses); on one node a confirmed publish and its delivery cost RabbitMQ the same CPU for
a quorum queue as for a classic one (about 0.5 ms, and 0.2 ms per further queue, measured
2026-12-05), so the classic vhost does not flatter the floor.
"""
import os
import threading
import urllib.parse
import uuid

import pymongo

from bench import cpu
from bench.harness import Figure
from bench.ledger import run_threads
from common import bus
from stack import stack

SUBSCRIBER_QUEUES = ("evt-floor-reserved--floor_a.on_reserved", "evt-floor-reserved--floor_b.on_reserved")


def _calls(proxies, n, write, org_id):
    """``n`` reservations over the proxies, one thread each (``bench.ledger.run_threads``); returns the
    elapsed seconds."""
    free, lock, mine = list(proxies), threading.Lock(), threading.local()

    def reserve(index):
        proxy = getattr(mine, "proxy", None)
        if proxy is None:
            with lock:
                proxy = mine.proxy = free.pop()
        proxy.floor.reserve({"_id": uuid.uuid4().hex, "org_id": org_id, "seq": index + 1, "kind": "reservation",
                             "amount": -1000, "job_id": f"floor-{index}", "idempotency_key": f"floor-{index}"},
                            write=write)
    return run_threads(n, len(proxies), reserve)


def measure(inst, insert_rate, n=1500, threads=8):
    """Figures ``floor_rpc_event_vs_insert`` and ``floor_rpc_insert_event_vs_insert`` (no goal:
    ceilings) against ``insert_rate`` (the ledger part's bare inserts per second), each with the
    CPU per call of every process printed."""
    from nameko.standalone.rpc import ClusterRpcProxy

    management = stack._management_api(inst)
    vhost = inst.vhost + "-floor"
    user, password = inst.rabbit_users[bus.ADMIN]
    management("PUT", f"/api/vhosts/{bus.quote(vhost)}", {})
    management("PUT", f"/api/permissions/{bus.quote(vhost)}/{bus.quote(user)}",
               {"configure": ".*", "write": ".*", "read": ".*"})
    amqp_uri = (f"amqp://{urllib.parse.quote(user, safe='')}:{urllib.parse.quote(password, safe='')}@"
                f"{inst.rabbit_host}:{inst.rabbit_ports[0]}/{urllib.parse.quote(vhost, safe='')}")
    config = os.path.join(inst.run_dir, "floor.yml")
    with open(config, "w") as handle:
        handle.write(f"AMQP_URI: '{amqp_uri}'\n")
    scratch_db = inst.db_prefix + "scratch_floor"
    env = dict(inst.service_env(), FLOOR_MONGO_URL=inst.mongo_url, FLOOR_DB=scratch_db)
    stack.spawn("floor", [os.path.join(stack.VENV_BIN, "nameko"), "run", "--config", config,
                          "bench.floor_service:Floor", "bench.floor_service:SubscriberA",
                          "bench.floor_service:SubscriberB"], inst.run_dir, inst.log_dir, env)
    pid_file = os.path.join(inst.run_dir, "floor.pid")
    proxies = []
    try:
        def subscribed():
            for name in SUBSCRIBER_QUEUES:
                try:
                    if not management("GET", f"/api/queues/{bus.quote(vhost)}/{bus.quote(name)}").get("consumers"):
                        return False
                except OSError:  # not declared yet (404)
                    return False
            return True
        stack.wait_for(subscribed, "the floor's subscribers", timeout=60)
        proxies = [ClusterRpcProxy({"AMQP_URI": amqp_uri}) for _ in range(threads)]
        started = [proxy.start() for proxy in proxies]
        org_id = str(uuid.uuid4())
        _calls(started, 10 * threads, True, org_id)  # warm: connections, the scratch collection
        figures = []
        for write, name, what in ((False, "floor_rpc_event_vs_insert", "RPC + event to 2 subscribers"),
                                  (True, "floor_rpc_insert_event_vs_insert", "RPC + insert_one + event to 2 "
                                                                             "subscribers")):
            with cpu.measure(inst) as used:
                seconds = _calls(started, n, write, org_id)
                cpu.settle(inst, labels=("floor",))
            rate = n / seconds
            print(f"  floor, {what}: {rate:.0f}/s; " + used.line(n, "call"), flush=True)
            figures.append(Figure(name, rate / insert_rate, None,
                                  f"({rate:.0f} bare nameko calls/s vs {insert_rate:.0f} inserts/s: what any "
                                  "reservation path of this design can reach at most)"))
        return figures
    finally:
        for proxy in proxies:
            proxy.stop()
        stack.stop_pid_file(pid_file)
        management("DELETE", f"/api/vhosts/{bus.quote(vhost)}")
        client = pymongo.MongoClient(inst.mongo_url)
        client.drop_database(scratch_db)
        client.close()
