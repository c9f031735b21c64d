"""Revocation under races: tokens minted by refreshes, logins and switches running *while* a
trigger (demotion, removal, leave, ownership transfer, logout, password change, switch,
organization deletion) is processed must die with the trigger, on every gateway worker, within
1 s of the trigger's answer.

Each round gives several racing actors their own sessions, releases them together with the
trigger (``threading.Barrier``) and lets them refresh (or log in) in a loop until shortly after the
trigger answered. Every token any of them obtained is then judged: a token that states something
the trigger changed (the old role, a membership that is gone, the old owner flag, a revoked session,
an organization being deleted) must be refused; tokens that state the new truth must keep working.
Before the fix (cut-offs compared with ``iat``, written before the change was visible) most rounds
left a stale token alive for its whole lifetime.
"""
import random
import threading
import time

import jwt
import pytest

from tests.support import assert_error, assert_every_worker_answers, join, wait_until

WITHIN = 1.0  # seconds after the trigger's answer
ROUNDS = 4
#: the member-level triggers' race window is a few milliseconds wide before the fix: more rounds
MEMBER_ROUNDS = 10
RACERS = 8
AFTER = 0.15  # the racers go on this long after the trigger answered


def claims(token):
    return jwt.decode(token, options={"verify_signature": False})


def login(gateway, account, org_id=None):
    body = {"email": account.email, "password": account.password}
    if org_id:
        body["organization_id"] = org_id
    response = gateway.post("/auth/login", body)
    assert response.status_code == 200, response.text
    return response.json()


class Race:
    """Racers refresh their own session chains (or log in again) while ``trigger`` runs."""

    def __init__(self, gateway):
        self.gateway = gateway
        self.issued = []  # every access token a racer obtained
        self.lock = threading.Lock()
        self.answered_at = None
        self.answer = None

    def _refresher(self, refresh_token, barrier, stop):
        barrier.wait()
        time.sleep(random.uniform(0, 0.04))  # spread the racers over the trigger's 0-40 ms
        while not stop.is_set():
            response = self.gateway.post("/auth/refresh", {"refresh_token": refresh_token})
            if response.status_code != 200:
                return
            pair = response.json()
            refresh_token = pair["refresh_token"]
            with self.lock:
                self.issued.append(pair["access_token"])

    def _logger_in(self, account, org_id, barrier, stop, attempts=3):
        """A few logins only: each counts against the per-email limit."""
        barrier.wait()
        for _ in range(attempts):
            if stop.is_set():
                return
            response = self.gateway.post("/auth/login", {"email": account.email, "password": account.password,
                                                         "organization_id": org_id})
            if response.status_code != 200:
                return
            with self.lock:
                self.issued.append(response.json()["access_token"])

    def run(self, trigger, refresh_tokens=(), logins=()):
        actors = len(refresh_tokens) + len(logins)
        barrier, stop = threading.Barrier(actors + 1), threading.Event()
        threads = [threading.Thread(target=self._refresher, args=(token, barrier, stop)) for token in refresh_tokens]
        threads += [threading.Thread(target=self._logger_in, args=(account, org_id, barrier, stop))
                    for account, org_id in logins]
        for thread in threads:
            thread.start()
        barrier.wait()
        time.sleep(random.uniform(0, 0.02))
        self.answer = trigger()
        self.answered_at = time.monotonic()
        # keep racing a little past the answer: what they get now must state the new truth
        wait_until(lambda: time.monotonic() - self.answered_at >= AFTER, timeout=5, interval=0.01,
                   what="racers to run past the answer")
        stop.set()
        for thread in threads:
            thread.join(30)
        return self.answer

    def assert_dead(self, tokens, path="/me", what="stale token"):
        """Every one of ``tokens`` is refused by the gateway within WITHIN of the answer (``/me``
        answers 200 for any token the gateway accepts)."""
        tokens = list(tokens)
        if not tokens:
            return
        deadline = self.answered_at + WITHIN

        def alive():
            return [t for t in tokens if self.gateway.get(path, t).status_code == 200]

        survivors = alive()
        while survivors and time.monotonic() < deadline:
            survivors = alive()
        assert not survivors, (f"{len(survivors)} of {len(tokens)} {what}s still accepted "
                               f"{time.monotonic() - self.answered_at:.2f}s after the trigger answered")

    def assert_dead_everywhere(self, token, test_stack, path="/me"):
        assert_every_worker_answers(test_stack, path, token, 401, "token_revoked", minimum=8)


def team(gateway, tap, owner, role, sessions=RACERS):
    """A member with ``role`` and ``sessions`` sessions of their own (the sign-up's and logins)."""
    member = join(gateway, tap, owner, role)
    sessions = [member.refresh_token] + [login(gateway, member)["refresh_token"] for _ in range(sessions - 1)]
    return member, sessions


@pytest.mark.parametrize("round_", range(MEMBER_ROUNDS))
def test_demotion_races_refresh(gateway, tap, test_stack, owner, round_):
    admin, sessions = team(gateway, tap, owner, "admin")
    race = Race(gateway)
    path = f"/organizations/{owner.org_id}/members/{admin.user_id}"
    answer = race.run(lambda: gateway.patch(path, {"role": "member"}, owner.token), sessions)
    assert answer.status_code == 200, answer.text
    stale = [t for t in race.issued if claims(t)["role"] == "admin"]
    fresh = [t for t in race.issued if claims(t)["role"] == "member"]
    # the gateway refuses every token stating the old role (services trust the token's role for
    # some checks, so a live admin token would still rename the organization or redirect its mail)
    race.assert_dead(stale + [admin.token], what="admin token")
    if stale:
        race.assert_dead_everywhere(stale[-1], test_stack)
    for token in fresh[-2:]:  # the new truth keeps working: no over-eager revocation
        assert gateway.get("/me", token).json()["role"] == "member"


@pytest.mark.parametrize("trigger", ["removal", "leave"])
@pytest.mark.parametrize("round_", range(MEMBER_ROUNDS))
def test_removal_races_refresh(gateway, tap, test_stack, owner, trigger, round_):
    admin, sessions = team(gateway, tap, owner, "admin")
    race = Race(gateway)
    path = f"/organizations/{owner.org_id}/members/{admin.user_id}"
    actor = owner.token if trigger == "removal" else admin.token
    answer = race.run(lambda: gateway.delete(path, token=actor), sessions)
    assert answer.status_code == 200, answer.text
    # nothing of the organization is reachable with any token the member ever got for it
    race.assert_dead(race.issued + [admin.token], what="removed member's token")
    if race.issued:
        race.assert_dead_everywhere(race.issued[-1], test_stack)
    for refresh_token in sessions:
        assert gateway.post("/auth/refresh", {"refresh_token": refresh_token}).status_code == 401


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_ownership_transfer_races_refresh(gateway, tap, test_stack, owner, round_):
    admin, admin_sessions = team(gateway, tap, owner, "admin")
    owner_sessions = [login(gateway, owner)["refresh_token"] for _ in range(RACERS // 2)]
    race = Race(gateway)
    answer = race.run(lambda: gateway.post(f"/organizations/{owner.org_id}/ownership",
                                           {"user_id": admin.user_id}, owner.token),
                      admin_sessions[:RACERS // 2] + owner_sessions)
    assert answer.status_code == 200, answer.text
    stale = [t for t in race.issued
             if claims(t)["owner"] != (claims(t)["sub"] == admin.user_id)]
    race.assert_dead(stale + [owner.token, admin.token], what="token with the old owner flag")
    if stale:
        race.assert_dead_everywhere(stale[-1], test_stack)


@pytest.mark.parametrize("trigger", ["logout", "switch"])
@pytest.mark.parametrize("round_", range(ROUNDS))
def test_session_end_races_refresh(gateway, tap, test_stack, owner, trigger, round_):
    """Logout and switch end one session: its tokens die, the account's other sessions live on."""
    other = gateway.post("/organizations", {"name": f"Second {round_}"}, owner.token)
    assert other.status_code == 201, other.text
    ending = login(gateway, owner)
    keep = [login(gateway, owner)["refresh_token"] for _ in range(2)]
    race = Race(gateway)
    if trigger == "logout":
        answer = race.run(lambda: gateway.post("/auth/logout", token=ending["access_token"]),
                          [ending["refresh_token"]] * 3 + keep)
    else:
        answer = race.run(lambda: gateway.post("/auth/switch", {"organization_id": other.json()["id"]},
                                               ending["access_token"]), [ending["refresh_token"]] * 3 + keep)
    assert answer.status_code == 200, answer.text
    ended_sid = claims(ending["access_token"])["sid"]
    race.assert_dead([t for t in race.issued if claims(t)["sid"] == ended_sid] + [ending["access_token"]],
                     what="token of the ended session")
    kept = [t for t in race.issued if claims(t)["sid"] != ended_sid]
    assert kept and gateway.get("/me", kept[-1]).status_code == 200


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_password_change_races_refresh(gateway, tap, test_stack, owner, round_):
    sessions = [login(gateway, owner)["refresh_token"] for _ in range(RACERS)]
    race = Race(gateway)
    answer = race.run(lambda: gateway.post("/auth/password", {"current_password": owner.password,
                                                             "new_password": f"the next password {round_}"},
                                           owner.token), sessions)
    assert answer.status_code == 200, answer.text
    race.assert_dead(race.issued + [owner.token], what="token from before the password change")
    if race.issued:
        race.assert_dead_everywhere(race.issued[-1], test_stack)
    assert gateway.get("/me", answer.json()["access_token"]).status_code == 200


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_organization_deletion_races_refresh_and_login(gateway, tap, test_stack, round_):
    owner = gateway.signup(organization_name=f"Doomed {round_}")
    member, sessions = team(gateway, tap, owner, "member", sessions=3)
    keep = gateway.post("/organizations", {"name": f"Kept {round_}"}, member.token)  # member lives on
    assert keep.status_code == 201, keep.text
    race = Race(gateway)
    name = gateway.get(f"/organizations/{owner.org_id}", owner.token).json()["name"]
    answer = race.run(lambda: gateway.delete(f"/organizations/{owner.org_id}", {"confirm_name": name}, owner.token),
                      sessions + [login(gateway, owner)["refresh_token"]],
                      logins=[(member, owner.org_id), (owner, owner.org_id)])
    assert answer.status_code == 202, answer.text
    doomed = [t for t in race.issued if claims(t)["org"] == owner.org_id]
    race.assert_dead(doomed + [member.token, owner.token], what="token of the deleted organization")
    if doomed:
        race.assert_dead_everywhere(doomed[-1], test_stack)
    # from the 202 on: no way back in
    assert_error(gateway.post("/auth/login", {"email": member.email, "password": member.password,
                                              "organization_id": owner.org_id}), 410, "organization_gone")
    for refresh_token in sessions:
        assert gateway.post("/auth/refresh", {"refresh_token": refresh_token}).status_code == 401
    # a plain login lands in the organization the member still has
    assert claims(login(gateway, member)["access_token"])["org"] == keep.json()["id"]


def test_two_tabs_refreshing_at_once_share_one_new_pair(gateway, owner):
    """Concurrent reuse within the grace window gets the winner's pair; the session lives on."""
    tabs = 5
    barrier, answers = threading.Barrier(tabs), []

    def tab():
        barrier.wait()
        answers.append(gateway.post("/auth/refresh", {"refresh_token": owner.refresh_token}))

    threads = [threading.Thread(target=tab) for _ in range(tabs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert [a.status_code for a in answers] == [200] * tabs, [a.text for a in answers]
    pairs = {(a.json()["access_token"], a.json()["refresh_token"]) for a in answers}
    assert len(pairs) == 1, "every tab holds the same new pair"
    access, refresh = pairs.pop()
    assert gateway.get("/me", access).status_code == 200
    renewed = gateway.post("/auth/refresh", {"refresh_token": refresh})
    assert renewed.status_code == 200, renewed.text
    assert gateway.get("/me", renewed.json()["access_token"]).status_code == 200


def test_reuse_after_the_grace_window_kills_the_family(gateway, test_stack, owner):
    from tests.support import service_config

    grace = float(service_config(test_stack, "membership")["REFRESH_REUSE_GRACE_SECONDS"])
    first = gateway.post("/auth/refresh", {"refresh_token": owner.refresh_token})
    assert first.status_code == 200
    rotated_at = time.monotonic()
    wait_until(lambda: time.monotonic() - rotated_at > grace + 0.5, timeout=grace + 5, interval=0.1,
               what="the grace window to pass")
    assert_error(gateway.post("/auth/refresh", {"refresh_token": owner.refresh_token}), 401, "invalid_token")
    # the thief's reuse ended the session: the legitimate holder's newer tokens die too
    assert_error(gateway.post("/auth/refresh", {"refresh_token": first.json()["refresh_token"]}), 401,
                 "invalid_token")
    wait_until(lambda: gateway.get("/me", first.json()["access_token"]).status_code == 401, timeout=WITHIN,
               what="the family's access token to die")
