"""`console_overview_vs_api`: the web console's Overview page against the API's overview, same run.

One person, logged in to the console (a real session cookie, through the login form) and holding an
API token, asks for both one request at a time, alternating in rounds so that a busy moment of the
shared machine hits both alike; the figure is the ratio of the median latencies on 127.0.0.1
(the server's time plus the same loopback hop for both). The page fetches the avatar menu's data,
the overview and, for an admin, the ledger side by side and renders HTML: goal <= 1.5x the API's
one round trip.

    python -m bench.console http://127.0.0.1:8080   # against a running stack (signs up one owner)
"""
import re
import statistics
import sys
import time
import uuid

import requests

from bench.harness import Figure

ROUNDS, PER_ROUND = 5, 40


def console_session(base_url, email, password):
    """A requests session logged in through the console's own login form (CSRF token and all)."""
    session = requests.Session()
    page = session.get(base_url + "/login", timeout=30).text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    answer = session.post(base_url + "/login", data={"email": email, "password": password, "csrf_token": csrf},
                          headers={"Origin": base_url}, timeout=30)
    if "/orgs/" not in answer.url:
        raise RuntimeError(f"console login failed: {answer.url}")
    return session


def latencies(session, url, count, headers=None):
    found = []
    for _ in range(count):
        started = time.perf_counter()
        answer = session.get(url, headers=headers, timeout=30)
        found.append(time.perf_counter() - started)
        if answer.status_code != 200:
            raise RuntimeError(f"GET {url} -> {answer.status_code}")
    return found


def measure(base_url, email, password, org_id, token):
    page = console_session(base_url, email, password)
    api = requests.Session()
    page_url, api_url = base_url + f"/orgs/{org_id}", base_url + f"/api/v1/organizations/{org_id}"
    bearer = {"Authorization": "Bearer " + token}
    latencies(page, page_url, 20)  # warm: pools, proxies, caches
    latencies(api, api_url, 20, bearer)
    console_times, api_times = [], []
    for _ in range(ROUNDS):
        console_times += latencies(page, page_url, PER_ROUND)
        api_times += latencies(api, api_url, PER_ROUND, bearer)
    console_ms, api_ms = statistics.median(console_times) * 1000, statistics.median(api_times) * 1000
    return Figure("console_overview_vs_api", console_ms / api_ms, "<= 1.5",
                  f"(median {console_ms:.1f} ms vs {api_ms:.1f} ms, {len(api_times)} requests each)")


def main(base_url):
    password = "bench password 123"
    email = f"bench-console-{uuid.uuid4().hex[:12]}@example.test"
    owner = requests.post(base_url + "/api/v1/auth/signup", json={
        "email": email, "password": password, "name": "Console Bench", "organization_name": "Console Bench"},
        timeout=30).json()
    figure = measure(base_url, email, password, owner["organization"]["id"], owner["access_token"])
    print(figure.line())
    return 0 if figure.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080"))
