"""The checks after a mixed workload (``soak.workload``'s lanes): every mail exactly once, every
deletion completed, every ledger consistent. `make soak` runs them after its workload, the cluster
fault test (``faults/``) after killing a broker node under load: one definition of "nothing was
lost or done twice" for both."""
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from tests.support import wait_until


@dataclass
class Figure:
    name: str
    value: str
    target: str = None       # None: for information
    ok: bool = True

    def line(self):
        if self.target is None:
            return f"{self.name}: {self.value} (for information)"
        return f'{self.name}: {self.value} (target {self.target}, {("met" if self.ok else "MISSED")})'



def check_mail(lanes, mails, drain):
    """Every invitation sent and every deletion requested gives exactly one mail, no more."""
    expected = [key for lane in lanes for key in lane.sent + lane.confirmations]

    def arrived():
        mails.scan(min_interval=0)
        return all(mails.get(key) for key in expected)
    try:
        wait_until(arrived, timeout=drain, interval=1.0, what="every invitation and confirmation mail")
    except AssertionError:
        pass  # counted below
    mails.scan(min_interval=0)
    missing = [key for key in expected if not mails.get(key)]
    duplicates = [key for key in expected if len(mails.get(key)) > 1]
    invites = mails.count(subject_prefix="You are invited to join ")
    uncertain = {key for lane in lanes for key in lane.uncertain}   # requests without an answer
    stray = [key for key in invites if key not in set(expected) and key not in uncertain]
    duplicates += [key for key in uncertain if len(mails.get(key)) > 1]
    sent = sum(len(lane.sent) for lane in lanes)
    once = sum(1 for lane in lanes for key in lane.sent if len(mails.get(key)) == 1)
    lost = sum(1 for lane in lanes for key in lane.sent if not mails.get(key))
    twice = sum(1 for lane in lanes for key in lane.sent + lane.uncertain if len(mails.get(key)) > 1)
    figures = [Figure("invite_mails_exactly_once",
                      f"{sent} sent, {once} received once, {lost} missing, {twice} duplicated, {len(stray)} unexpected",
                      "every invite: exactly one mail", not missing and not duplicates and not stray)]
    confirmations = [key for lane in lanes for key in lane.confirmations]
    confirmed_once = sum(1 for key in confirmations if len(mails.get(key)) == 1)
    figures.append(Figure("deletion_mails_exactly_once", f"{confirmed_once} of {len(confirmations)}",
        "all", all(len(mails.get(key)) == 1 for key in confirmations)))
    for key in (missing + duplicates + stray)[:10]:
        print(f"  mail {key[0]} {key[1]!r}: {len(mails.get(key))} received", flush=True)
    return figures


def check_deletions(lanes, drain):
    lane_of = {org_id: lane for lane in lanes for org_id in lane.deletions}

    def done():
        return all(lane.poll_deletion(org_id) for org_id, lane in lane_of.items()
                   if not lane.deletions[org_id]["deleted"])
    try:
        wait_until(done, timeout=drain, interval=1.0, what="every deletion to complete")
    except AssertionError:
        pass
    durations = sorted(d["deleted"] - d["requested"] for lane in lanes for d in lane.deletions.values()
                       if d["deleted"])
    completed = len(durations)
    note = (f", requested -> deleted median {durations[len(durations) // 2]:.1f}s, slowest "
            f"{durations[-1]:.1f}s") if durations else ""
    return Figure("deletions_completed", f"{completed} of {len(lane_of)}{note}", "all",
                  completed == len(lane_of))


def ledger_of(lane, org):
    """``(problems, balance)`` of one organization's ledger read through the API as the superuser."""
    entries, cursor, problems, balance = [], None, [], None
    while True:
        params = {"limit": 200}
        if cursor:
            params["cursor"] = cursor
        response = lane.c.call("GET", f"/organizations/{org.id}/credits", "GET /organizations/{id}/credits",
                               token=lane.su_token(), params=params)
        if response is None:
            return ["ledger unreadable"], None
        page = response.json()
        balance = page["balance"] if cursor is None else balance
        entries += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    entries.sort(key=lambda e: e["sequence"])
    running = 0
    for position, entry in enumerate(entries, 1):
        running += entry["amount"]
        if entry["sequence"] != position:
            problems.append(f'sequence {entry["sequence"]} at position {position}')
        if entry["balance_after"] != running or running < 0:
            problems.append(f'entry {position}: balance_after {entry["balance_after"]}, running sum {running}')
    if balance != running or balance < 0:
        problems.append(f"balance {balance}, sum of {len(entries)} entries {running}")
    if org.exact and balance != org.balance:
        problems.append(f"balance {balance}, the workload expects {org.balance}")
    usage = lane.c.call("GET", f"/organizations/{org.id}/usage", "GET /organizations/{id}/usage",
                        token=lane.su_token())
    if usage is None or usage.json()["credits"]["balance"] != balance:
        problems.append(f'usage says {(usage.json()["credits"] if usage is not None else "nothing")}')
    return problems, balance


def check_ledgers(lanes):
    """For each organization still alive: the API's balance is the sum of its ledger, never negative
    (at any entry), the usage summary says the same, and the overview's read model catches up."""
    work = [(lane, org) for lane in lanes for org in lane.orgs]
    with ThreadPoolExecutor(len(lanes)) as pool:   # one thread per lane: a lane's client is not shared
        per_lane = list(pool.map(lambda lane: [ledger_of(lane, org) for org in lane.orgs], lanes))
    results = [result for lane_results in per_lane for result in lane_results]
    bad = {}
    for (lane, org), (problems, balance) in zip(work, results, strict=False):
        if problems:
            bad[org.id] = problems
            continue

        def overview_agrees(lane=lane, org=org, balance=balance):
            response = lane.c.call("GET", f"/organizations/{org.id}", "GET /organizations/{id}", token=lane.su_token())
            return response is not None and response.json()["credits"]["balance"] == balance
        try:
            wait_until(overview_agrees, timeout=30, interval=0.5, what=f"overview balance of {org.id}")
        except AssertionError:
            bad[org.id] = [f"overview balance never reached {balance}"]
    for org_id, problems in list(bad.items())[:10]:
        print(f'  ledger {org_id}: {"; ".join(problems[:5])}', flush=True)
    return Figure("ledger_balances_consistent", f"{len(work) - len(bad)} of {len(work)} organizations",
                  "all", not bad)
