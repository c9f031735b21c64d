"""Liveness of a nameko container: ``python -m common.probe`` (compose healthcheck, Kubernetes probe).

PID 1 must be the ``nameko run`` process (exec-form command, no init), its queue consumer must have
iterated within ``common.heartbeat.MAX_AGE_SECONDS`` (the heartbeat file ``common/liveness.py`` writes:
a process stuck in a reconnect loop or a blocked event loop keeps TCP connections but stops
beating), and it must hold an established TCP connection to one of the broker nodes of
``AMQP_URI`` -- any of them: with several nodes listed (``amqp://a;amqp://b``) kombu is connected to
whichever answered, and a probe of the first one only would restart a healthy service whenever that
node is down. Standard library and the heartbeat's path only.
"""
import os
import sys

from common.bus import broker_addresses
from common.heartbeat import beating


def connected_ports(tables=("/proc/net/tcp", "/proc/net/tcp6")):
    """Remote ports of every established TCP connection of this network namespace."""
    ports = set()
    for table in tables:
        try:
            with open(table) as handle:
                rows = handle.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "01":  # 01 = ESTABLISHED
                ports.add(int(fields[2].rsplit(":", 1)[1], 16))
    return ports


def broker_connected(amqp_uri):
    """Some established connection goes to the port of a broker node of ``amqp_uri``."""
    return bool({port for _, port in broker_addresses(amqp_uri)} & connected_ports())


def main():
    with open("/proc/1/cmdline", "rb") as handle:
        if b"nameko" not in handle.read():
            return "pid 1 is not nameko"
    if not beating(pid=1):
        return "the queue consumer has not iterated for a while (no heartbeat)"
    if not broker_connected(os.environ["AMQP_URI"]):
        return "no connection to a broker node of AMQP_URI"
    return 0


if __name__ == "__main__":
    sys.exit(main())
