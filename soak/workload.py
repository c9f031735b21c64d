"""The soak's mixed workload: lanes of users and organizations driven through the gateway's HTTP API.

Each client thread runs one *lane*: its own accounts and organizations, so no two threads ever use
the same token (a switch revokes the previous session) and each lane knows exactly what every
answer must be -- the status of every request, the credit balance of each of its organizations.
Every request names the statuses the scenario expects; anything else is recorded as unexpected.
"""
import random
import re
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from datetime import datetime

import requests

from tests.support import SUPERUSER, Gateway, Mailbox, unique_email, wait_until

PASSWORD = "soak password 1234"
ROLES = ("member", "member", "member", "dataset_manager", "dataset_manager", "admin")
INVITE_SUBJECT = "You are invited to join "        # services/notifications/mail.py SUBJECTS
DELETION_SUFFIX = " is being deleted"
ACCEPT_LINK = re.compile(r"Accept the invitation: (\S+)")

# operation -> weight (per 100 operations)
MIX = {"signup": 7, "invite": 12, "accept": 12, "switch": 7, "read": 30, "storage": 6, "grant": 6,
       "reserve": 9, "settle": 6, "delete": 3, "deletion_status": 2}


def parse_time(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class Stats:
    """Every request's status and latency, shared by all lanes."""

    def __init__(self):
        self.lock = threading.Lock()
        self.samples = []            # (finished_at monotonic, seconds, ok)
        self.unexpected = []         # (label, status, body excerpt)
        self.mismatches = []         # answers with an expected status but wrong content
        self.operations = []         # (finished_at, name)
        self.by_label = {}           # label -> [seconds]
        self.unknown_outcomes = 0    # writes without an answer, resolved afterwards

    def record(self, label, status, seconds, ok, body=""):
        with self.lock:
            self.samples.append((time.monotonic(), seconds, ok))
            self.by_label.setdefault(label, []).append(seconds)
            if not ok:
                self.unexpected.append((label, status, body[:300]))

    def mismatch(self, what):
        with self.lock:
            self.mismatches.append(what)

    def unknown(self):
        with self.lock:
            self.unknown_outcomes += 1

    def operation(self, name):
        with self.lock:
            self.operations.append((time.monotonic(), name))


class Client(Gateway):
    """The tests' gateway client, recording every answer against the statuses the caller expects."""

    def __init__(self, base_url, stats):
        super().__init__(base_url)
        self.stats = stats

    def call(self, method, path, label, expect=(200,), token=None, json=None, params=None):
        began = time.monotonic()
        if params:
            path += "?" + urllib.parse.urlencode(params)
        try:
            response = self.request(method, path, token, json=json, timeout=30)
        except requests.RequestException as error:
            self.stats.record(label, "error", time.monotonic() - began, False, repr(error))
            return None
        ok = response.status_code in expect
        self.stats.record(label, response.status_code, time.monotonic() - began, ok,
                          "" if ok else response.text)
        return response if ok else None


@dataclass(eq=False)
class Account:
    email: str
    user_id: str = None
    token: str = None
    refresh_token: str = None
    issued_at: float = 0.0
    expires_in: float = 900.0
    current_org: str = None          # the organization the token is scoped to; None: log in first
    orgs: dict = field(default_factory=dict)   # org_id -> role
    alive: bool = True

    def take(self, body, org_id):
        self.user_id = body["user"]["id"]
        self.token, self.refresh_token = body["access_token"], body["refresh_token"]
        self.issued_at, self.expires_in = time.monotonic(), body["expires_in"]
        self.current_org = org_id


@dataclass(eq=False)
class Org:
    id: str
    name: str
    owner: Account
    balance: int = 0
    grants: list = field(default_factory=list)        # (idempotency key, amount)
    reservations: list = field(default_factory=list)  # (reservation id, amount), not settled yet
    datasets: dict = field(default_factory=dict)
    exact: bool = True               # False once a write's outcome stayed unknown: balance not predicted


@dataclass(eq=False)
class Invite:
    email: str
    org: Org
    role: str
    account: Account = None          # None: a new person, who signs up with the invite token
    token: str = None                # read from the invitation mail


class MailIndex:
    """Every mail in the instance's sink folder, by (recipient, subject)."""

    def __init__(self, directory):
        self.mailbox = Mailbox(directory)
        self.lock = threading.Lock()
        self.by_key = {}
        self.indexed = 0
        self.scanned_at = 0.0

    def scan(self, min_interval=0.5):
        with self.lock:
            if time.monotonic() - self.scanned_at < min_interval:
                return
            mails = self.mailbox.all()
            for mail in mails[self.indexed:]:
                for rcpt in mail.rcpt_to:
                    self.by_key.setdefault((rcpt.lower(), mail.subject), []).append(mail)
            self.indexed = len(mails)
            self.scanned_at = time.monotonic()

    def get(self, key):
        with self.lock:
            return list(self.by_key.get(key, ()))

    def count(self, subject_prefix="", subject_suffix=""):
        """``{key: number of mails}`` of the mails whose subject has that prefix and suffix."""
        with self.lock:
            return {key: len(mails) for key, mails in self.by_key.items()
                    if key[1].startswith(subject_prefix) and key[1].endswith(subject_suffix)}


def invite_mail(email, org_name):
    return email.lower(), INVITE_SUBJECT + org_name


def deletion_mail(email, org_name):
    return email.lower(), org_name + DELETION_SUFFIX


class Lane:
    """One client thread's world: its accounts, organizations, invites and deletions."""

    def __init__(self, index, client, mails, stats, seed):
        self.index = index
        self.c = client
        self.mails = mails
        self.stats = stats
        self.rnd = random.Random(seed)
        self.accounts = []
        self.orgs = []                # alive organizations (not being deleted)
        self.invites = []             # sent, not accepted, not void
        self.sent = []                # (recipient, subject) of every invite sent
        self.confirmations = []       # (recipient, subject) of every deletion's confirmation
        self.uncertain = []           # mails of invites whose request got no answer: at most one each
        self.blocked = set()          # (email, org id) of every invite sent or tried: never invited again
                                      # (a mail is known by recipient and subject, one per pair)
        self.deletions = {}           # org id -> {"requested": monotonic, "deleted": monotonic or None}
        self.su = Account(SUPERUSER["email"])

    # -- tokens ----------------------------------------------------------------------------------
    def login(self, account, org_id=None):
        body = {"email": account.email, "password": SUPERUSER["password"] if account is self.su else PASSWORD}
        if org_id:
            body["organization_id"] = org_id
        response = self.c.call("POST", "/auth/login", "POST /auth/login", token=None, json=body)
        if response is not None:
            data = response.json()
            account.take(data, (data.get("organization") or {}).get("id") if account is self.su else org_id)
            return True
        return False

    def fresh(self, account):
        """A usable access token: refreshed well before it expires."""
        if account.token is None:
            return self.login(account)
        if time.monotonic() - account.issued_at > account.expires_in * 0.7:
            response = self.c.call("POST", "/auth/refresh", "POST /auth/refresh",
                                   json={"refresh_token": account.refresh_token})
            if response is None:
                account.token = None
                return False
            account.take(response.json(), account.current_org)
        return True

    def su_token(self):
        self.fresh(self.su)
        return self.su.token

    def resolve(self, send, what):
        """A write that got no answer (503, timeout): repeat it -- it is idempotent -- until it is
        answered; None if it never is. (``send`` returns the response, or None.)"""
        self.stats.unknown()
        answers = []

        def answered():
            response = send()
            if response is not None:
                answers.append(response)
            return bool(answers)
        try:
            wait_until(answered, timeout=30, interval=0.5, what=what)
        except AssertionError:
            return None
        return answers[0]

    def resync(self, account):
        """The account's organizations as the API reports them (after an accept without an answer)."""
        response = self.c.call("GET", "/me", "GET /me", token=account.token) if self.fresh(account) else None
        if response is not None:
            alive = {o.id for o in self.orgs}
            account.orgs = {o["id"]: o["role"] for o in response.json()["organizations"] if o["id"] in alive}

    def scoped(self, account, org):
        """``account``'s token scoped to ``org``: switch (or log in) when it is scoped elsewhere."""
        if account.current_org == org.id and account.token:
            return self.fresh(account) and account.token
        if account.current_org is None or account.token is None:
            return self.login(account, org.id) and account.token
        if not self.fresh(account):
            return None
        response = self.c.call("POST", "/auth/switch", "POST /auth/switch", token=account.token,
                               json={"organization_id": org.id})
        if response is None:   # the old session may have ended: log in next time
            self.stats.unknown()
            account.token = account.current_org = None
            return None
        account.take(response.json(), org.id)
        return account.token

    # -- picking -----------------------------------------------------------------------------------
    def members(self, org, roles=None):
        return [a for a in self.accounts if a.alive and org.id in a.orgs and (roles is None or a.orgs[org.id] in roles)]

    def pick_org(self):
        return self.rnd.choice(self.orgs) if self.orgs else None

    # -- operations --------------------------------------------------------------------------------
    def op_signup(self):
        account = Account(unique_email(f"soak{self.index}"))
        name = f"Soak {uuid.uuid4().hex[:10]}"
        response = self.c.call("POST", "/auth/signup", "POST /auth/signup", expect=(201,), json={
            "email": account.email, "password": PASSWORD, "name": "Soak Owner", "organization_name": name})
        if response is None:
            return
        data = response.json()
        org = Org(data["organization"]["id"], name, account)
        account.take(data, org.id)
        account.orgs[org.id] = "admin"
        self.accounts.append(account)
        self.orgs.append(org)

    def op_invite(self):
        org = self.pick_org()
        if org is None:
            return self.op_signup()
        token = self.scoped(org.owner, org)
        if not token:
            return
        pending = {i.email for i in self.invites if i.org is org}
        others = [a for a in self.accounts if a.alive and org.id not in a.orgs and a.email not in pending
                  and (a.email, org.id) not in self.blocked]
        invites = []
        for _ in range(self.rnd.choice((1, 1, 2, 3))):
            if others and self.rnd.random() < 0.35:
                account = others.pop(self.rnd.randrange(len(others)))
                invites.append(Invite(account.email, org, None, account))
            else:
                invites.append(Invite(unique_email(f"invitee{self.index}"), org, None))
        role = self.rnd.choice(ROLES)
        response = self.c.call("POST", f"/organizations/{org.id}/invites", "POST /organizations/{id}/invites",
                               expect=(201,), token=token, json={"emails": [i.email for i in invites], "role": role})
        if response is None:   # maybe created: its mail may come, once
            self.stats.unknown()
            self.uncertain += [invite_mail(i.email, org.name) for i in invites]
            self.blocked.update((i.email, org.id) for i in invites)
            return
        body = response.json()
        if len(body["items"]) != len(invites) or body["skipped"]:
            self.stats.mismatch(f"invite answer {body!r} for {len(invites)} new invitees")
        self.blocked.update((i.email, org.id) for i in invites)
        for invite in invites:
            invite.role = role
            self.invites.append(invite)
            self.sent.append(invite_mail(invite.email, org.name))

    def _read_mail(self):
        """Invite tokens from the invitation mails that arrived (the only place a token appears)."""
        if any(i.token is None for i in self.invites):
            self.mails.scan()
            for invite in self.invites:
                if invite.token is None:
                    found = self.mails.get(invite_mail(invite.email, invite.org.name))
                    if found:
                        invite.token = ACCEPT_LINK.search(found[0].text).group(1).rsplit("/", 1)[1]

    def _mailed_invites(self):
        ready = [i for i in self.invites if i.token]
        if len(ready) < 3:
            self._read_mail()
            ready = [i for i in self.invites if i.token]
        return ready

    def op_accept(self):
        ready = self._mailed_invites()
        if not ready:
            return self.op_read()
        invite = self.rnd.choice(ready)
        self.invites.remove(invite)
        self.c.call("GET", f"/invites/{invite.token}", "GET /invites/{token}")
        if invite.account is None:
            account = Account(invite.email)
            response = self.c.call("POST", "/auth/signup", "POST /auth/signup (invite_token)", expect=(201,), json={
                "email": invite.email, "password": PASSWORD, "name": "Soak Invitee", "invite_token": invite.token})
            if response is None:   # the account may exist: it can log in then
                self.stats.unknown()
                login = self.c.call("POST", "/auth/login", "POST /auth/login (after no answer)", expect=(200, 401),
                                    json={"email": account.email, "password": PASSWORD})
                if login is not None and login.status_code == 200:
                    account.take(login.json(), None)
                    self.accounts.append(account)
                    self.resync(account)
                return
            self.accounts.append(account)
        else:
            account = invite.account
            if not self.fresh(account):
                return
            response = self.c.call("POST", f"/invites/{invite.token}/accept", "POST /invites/{token}/accept",
                                   token=account.token)
            if response is None:
                self.stats.unknown()
                self.resync(account)
                return
        account.take(response.json(), invite.org.id)
        account.orgs[invite.org.id] = invite.role

    def op_switch(self):
        travellers = [a for a in self.accounts if a.alive and len(a.orgs) > 1]
        if not travellers:
            return self.op_read()
        account = self.rnd.choice(travellers)
        target = self.rnd.choice([o for o in self.orgs if o.id in account.orgs and o.id != account.current_org]
                                 or [None])
        if target is not None:
            self.scoped(account, target)

    def op_read(self):
        candidates = [a for a in self.accounts if a.alive and a.orgs]
        if not candidates:
            return self.op_signup()
        account = self.rnd.choice(candidates)
        org = next((o for o in self.orgs if o.id == account.current_org), None) or next(
            o for o in self.orgs if o.id in account.orgs)
        token = self.scoped(account, org)
        if not token:
            return
        kind = self.rnd.randrange(5)
        if kind == 0:
            self.c.call("GET", f"/organizations/{org.id}", "GET /organizations/{id}", token=token)
        elif kind == 1:
            self.c.call("GET", f"/organizations/{org.id}/members", "GET /organizations/{id}/members",
                        token=token, params={"limit": 20})
        elif kind == 2:
            self.c.call("GET", f"/organizations/{org.id}/usage", "GET /organizations/{id}/usage", token=token)
        elif kind == 3:
            self.c.call("GET", "/me", "GET /me", token=token)
        else:
            self.c.call("GET", "/organizations", "GET /organizations", token=token)

    def op_storage(self):
        org = self.pick_org()
        if org is None:
            return self.op_signup()
        complete = org.datasets is None or self.rnd.random() < 0.3
        chosen = self.rnd.sample(range(30), self.rnd.randint(1, 12))
        report = {f"ds-{n}": self.rnd.randrange(10 ** 9) for n in chosen}
        response = self.c.call("POST", f"/organizations/{org.id}/storage-reports",
                               "POST /organizations/{id}/storage-reports", expect=(201,), token=self.su_token(),
                               json={"datasets": [{"dataset_id": k, "bytes": v} for k, v in report.items()],
                                     "complete": complete})
        if response is None:   # maybe applied: the next report is a complete one
            self.stats.unknown()
            org.datasets = None
            return
        if complete:
            org.datasets = report
        else:
            org.datasets.update(report)
        body = response.json()
        expected = (sum(org.datasets.values()), len(org.datasets)) if org.datasets is not None else None
        if expected is not None and (body["used_bytes"], body["datasets"]) != expected:
            self.stats.mismatch(f"storage totals of {org.id}: {body!r}, expected {sum(org.datasets.values())} bytes in "
                                f"{len(org.datasets)} datasets")

    def op_grant(self):
        org = self.pick_org()
        if org is None:
            return self.op_signup()
        replay = bool(org.grants) and self.rnd.random() < 0.15
        key, amount = self.rnd.choice(org.grants) if replay else (uuid.uuid4().hex, self.rnd.randint(1, 50) * 1000)

        def send():
            return self.c.call("POST", f"/organizations/{org.id}/credits/grants",
                               "POST /organizations/{id}/credits/grants", expect=(201,), token=self.su_token(),
                               json={"amount": amount, "idempotency_key": key, "comment": "soak"})
        response = send()
        if response is None:
            response = self.resolve(send, f"an answer to grant {key}")
        if response is None:
            org.exact = False
            return
        replayed = response.headers.get("Idempotent-Replayed") == "true"
        if replay:
            if not replayed:
                self.stats.mismatch(f"grant replay on {org.id} not flagged as replayed")
            return
        org.grants.append((key, amount))
        org.balance += amount
        self.expect_balance(org, response, "grant")

    def expect_balance(self, org, response, what):
        if org.exact and response.json()["balance"] != org.balance:
            self.stats.mismatch(f'{what} on {org.id}: balance {response.json()["balance"]}, expected {org.balance}')

    def op_reserve(self):
        choices = [(a, o) for o in self.orgs for a in self.members(o, ("dataset_manager", "admin"))]
        if not choices:
            return self.op_grant()
        account, org = self.rnd.choice(choices)
        token = self.scoped(account, org)
        if not token:
            return
        amount = self.rnd.randint(1, 20) * 500
        expect = ((201,) if org.balance >= amount else (402,)) if org.exact else (201, 402)
        job = uuid.uuid4().hex

        def send():
            return self.c.call("POST", f"/organizations/{org.id}/credits/reservations",
                               "POST /organizations/{id}/credits/reservations", expect=expect, token=account.token,
                               json={"amount": amount, "job_id": job, "job_type": "soak_inference",
                                     "idempotency_key": job})
        response = send()
        if response is None and self.fresh(account):
            response = self.resolve(send, f"an answer to reservation {job}")
        if response is None:
            org.exact = False
            return
        if response.status_code == 402:
            return
        org.balance -= amount
        org.reservations.append((response.json()["entry"]["id"], amount))
        self.expect_balance(org, response, "reservation")

    def op_settle(self):
        open_ = [o for o in self.orgs if o.reservations]
        if not open_:
            return self.op_reserve()
        org = self.rnd.choice(open_)
        reservation_id, amount = org.reservations.pop(self.rnd.randrange(len(org.reservations)))
        outcome = self.rnd.choice(("succeeded", "failed"))

        def send():
            return self.c.call("POST", f"/organizations/{org.id}/credits/reservations/{reservation_id}/settle",
                               "POST /organizations/{id}/credits/reservations/{id}/settle", token=self.su_token(),
                               json={"outcome": outcome})
        response = send()
        if response is None:
            response = self.resolve(send, f"an answer to settling {reservation_id}")
        if response is None:
            org.exact = False
            return
        if outcome == "failed":
            org.balance += amount
        self.expect_balance(org, response, "settlement")

    def op_delete(self):
        # keep a few organizations per lane; delete only those whose invitation mails all arrived
        # (a deleted organization's queued invitation mail is purged with it, by design)
        self._read_mail()
        waiting = {i.org for i in self.invites if i.token is None}
        candidates = [o for o in self.orgs if o not in waiting]
        if len(self.orgs) <= 2 or not candidates:
            return self.op_signup()
        org = self.rnd.choice(candidates)
        token = self.scoped(org.owner, org)
        if not token:
            return
        response = self.c.call("GET", f"/organizations/{org.id}/export", "GET /organizations/{id}/export",
                               token=token)
        if response is None:
            return
        if response.json()["organization_id"] != org.id:
            self.stats.mismatch(f'export of {org.id} names {response.json()["organization_id"]}')
        response = self.c.call("DELETE", f"/organizations/{org.id}", "DELETE /organizations/{id}", expect=(202,),
                               token=token, json={"confirm_name": org.name})
        if response is None:   # requested or not: the deletion status tells
            self.stats.unknown()
            status = self.c.call("GET", f"/organizations/{org.id}/deletion",
                                 "GET /organizations/{id}/deletion (after no answer)", expect=(200, 404),
                                 token=self.su_token())
            if status is None or status.status_code != 200:
                return
        self.deleted(org)

    def deleted(self, org):
        """What a requested deletion does to the lane's world."""
        self.orgs.remove(org)
        self.confirmations.append(deletion_mail(org.owner.email, org.name))
        self.deletions[org.id] = {"requested": time.monotonic(), "deleted": None}
        self.invites = [i for i in self.invites if i.org is not org]
        for account in self.accounts:
            if org.id in account.orgs:
                del account.orgs[org.id]
                if account.current_org == org.id:   # its token died with the organization
                    account.token = account.current_org = None
                if not account.orgs:                # an account in no other organization is deleted
                    account.alive = False
        self.accounts = [a for a in self.accounts if a.alive]
        self.invites = [i for i in self.invites if i.account is None or i.account.alive]

    def poll_deletion(self, org_id):
        response = self.c.call("GET", f"/organizations/{org_id}/deletion", "GET /organizations/{id}/deletion",
                               token=self.su_token())
        if response is not None and response.json()["status"] == "deleted" and not self.deletions[org_id]["deleted"]:
            body = response.json()   # how long the purge took, as the service recorded it
            took = (parse_time(body["completed_at"]) - parse_time(body["requested_at"])).total_seconds()
            self.deletions[org_id]["deleted"] = self.deletions[org_id]["requested"] + took
        return bool(self.deletions[org_id]["deleted"])

    def op_deletion_status(self):
        pending = [org_id for org_id, d in self.deletions.items() if not d["deleted"]]
        if not pending:
            return self.op_read()
        self.poll_deletion(self.rnd.choice(pending))

    def step(self):
        name = self.rnd.choices(list(MIX), weights=list(MIX.values()))[0]
        getattr(self, "op_" + name)()
        self.stats.operation(name)


class Pacer:
    """A fixed schedule of operation slots shared by every thread: ``rate`` per second. A slot more
    than a second late is dropped (counted), so a slow phase never turns into a burst afterwards."""

    def __init__(self, rate):
        self.interval = 1.0 / rate
        self.lock = threading.Lock()
        self.next = time.monotonic()
        self.dropped = 0

    def wait(self, stop_at):
        with self.lock:
            now = time.monotonic()
            if now - self.next > 1.0:
                missed = int((now - self.next) / self.interval)
                self.dropped += missed
                self.next += missed * self.interval
            slot, self.next = self.next, self.next + self.interval
        if slot >= stop_at:
            return False
        delay = slot - time.monotonic()
        if delay > 0:
            time.sleep(delay)   # the rate pacing itself
        return True


def run_lanes(lanes, pacer, seconds):
    """Drive every lane in its own thread for ``seconds`` at the pacer's rate."""
    stop_at = time.monotonic() + seconds
    errors = []

    def drive(lane):
        try:
            while pacer.wait(stop_at):
                lane.step()
        except Exception as error:  # a bug in the soak itself: stop this lane, report it
            import traceback
            errors.append(f"lane {lane.index}: {traceback.format_exc()}")
            lane.stats.mismatch(f"lane {lane.index} crashed: {error!r}")

    threads = [threading.Thread(target=drive, args=(lane,), daemon=True) for lane in lanes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors
