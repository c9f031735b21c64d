"""A service's liveness means its consumer consumes (common/liveness.py, common/probe.py).

A TCP connection to the broker was the old sign of life; a process that stopped consuming (here:
frozen with SIGSTOP, as a blocked event loop or a stuck reconnect loop would be) keeps it, yet its
heartbeat goes stale and the probe fails; it beats again once the process runs.
"""
import os
import signal

from common import heartbeat, probe
from stack import stack
from tests.support import wait_until

MAX_AGE = 4.0  # the probe's 30 s, shortened: the consumer's idle round is 1 s


def test_the_probe_fails_when_the_consumer_stops_iterating_and_passes_when_it_resumes(test_stack):
    pid_file = stack.start_replica(test_stack, "org", "org-liveness")
    pid = stack.read_pid(pid_file)
    try:
        wait_until(lambda: heartbeat.beating(pid, max_age=MAX_AGE), timeout=15, what="the replica's heartbeat")
        os.kill(pid, signal.SIGSTOP)
        try:
            assert probe.broker_connected(test_stack.amqp_uri)  # the old check still passes
            wait_until(lambda: not heartbeat.beating(pid, max_age=MAX_AGE), timeout=MAX_AGE + 10,
                       what="the frozen replica's heartbeat to go stale")
        finally:
            os.kill(pid, signal.SIGCONT)
        wait_until(lambda: heartbeat.beating(pid, max_age=MAX_AGE), timeout=15, what="the heartbeat to resume")
    finally:
        stack.stop_pid_file(pid_file)
    assert not os.path.exists(heartbeat.heartbeat_file(pid)), "a stopped service leaves no heartbeat behind"


def test_every_service_of_the_stack_beats(test_stack, gateway):
    for service in stack.SERVICES:
        pid = stack.read_pid(stack._pid_file(test_stack, service))
        wait_until(lambda pid=pid: heartbeat.beating(pid, max_age=MAX_AGE), timeout=15,
                   what=f"{service}'s heartbeat")
