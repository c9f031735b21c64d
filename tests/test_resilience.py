"""Real processes stopped and restarted: 503 instead of a hang, and no event lost meanwhile."""
import time

import pytest

from stack import stack
from tests.support import assert_error, wait_until


def kill_service(inst, service):
    pid = stack.read_pid(stack._pid_file(inst, service))
    assert pid, f"{service} is not running"
    stack.stop_pid_file(stack._pid_file(inst, service), sig=9)


@pytest.mark.slow
def test_stopped_service_gives_503_within_the_rpc_timeout_and_comes_back(gateway, test_stack, owner):
    kill_service(test_stack, "org")
    try:
        started = time.monotonic()
        response = gateway.get(f"/organizations/{owner.org_id}", owner.token)
        elapsed = time.monotonic() - started
        assert_error(response, 503, "service_unavailable")
        assert response.headers.get("Retry-After")
        assert elapsed < 3 + 2, f"took {elapsed:.1f}s; the RPC timeout is 3s"
        ready = gateway.get(gateway.base_url + "/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["org"].startswith("unavailable")
    finally:  # a failure here must not leave the rest of the suite without the org service
        stack.up(test_stack, quiet=True)  # what `make up` does: starts only what is not running
    assert gateway.get(f"/organizations/{owner.org_id}", owner.token).status_code == 200


@pytest.mark.slow
def test_event_published_while_subscriber_is_down_is_delivered_when_it_returns(gateway, test_stack, owner):
    kill_service(test_stack, "membership")
    try:
        renamed = gateway.patch(f"/organizations/{owner.org_id}", {"name": "Renamed While Down"}, owner.token)
        assert renamed.status_code == 200, renamed.text
    finally:  # as above: the suite goes on with every service
        stack.up(test_stack, quiet=True)
    wait_until(lambda: gateway.get("/me", owner.token).json()["organization"]["name"] == "Renamed While Down",
               timeout=15, what="the queued organization_renamed event to be consumed")
