"""Isolation matrix: every operation of the OpenAPI document x every kind of caller.

The expected statuses are written by hand from the contract (``EXPECTED``, keyed by operationId);
the document's ``x-access`` is only used to cross-check them. An operation in the document that is
missing here (or the reverse) fails the suite, so a new endpoint cannot ship without its row.

Each request is built to pass validation (so an allowed caller reaches the service), with path
parameters pointing at the target organization "A" and its real members, invites and
reservations. Besides the status, every response is scanned for data of organizations the caller
does not belong to: the ids and names of A, of B (another organization) and of C (a canary
organization nobody in the matrix belongs to).

Destructive operations keep the matrix meaningful: in each row the callers expected to succeed go
last; what they consume (an invite, a member, a reservation) is created fresh for them; ownership
transfer and organization deletion run in worlds of their own; a password change is reverted
right away and the caller continues with the fresh tokens.
"""
import re
import time
import uuid

import pytest

from tests.support import SUPERUSER, Account, invite, join, unique_email, wait_until
from tests.tokens import forge, stranger_key

INVALID = ("anonymous", "expired", "forged", "removed_stale")  # no usable token
OUTSIDE = ("removed", "other_admin", "multi")  # valid tokens, not scoped to A
INSIDE = ("member", "dataset_manager", "admin", "owner")  # members of A, tokens scoped to A
PRINCIPALS = INVALID + OUTSIDE + INSIDE + ("superuser",)
"""
anonymous        no Authorization header
expired          a token signed with the real key for A's owner, expired
forged           a token for A's owner (claiming superuser) signed with another key
removed_stale    the token a member of A held before being removed
removed          the removed member, logged in again (a valid token, no organization)
other_admin      the owner/admin of organization B, token scoped to B
multi            a member of both A and B, token scoped to B
member, dataset_manager, admin, owner   of A, tokens scoped to A
superuser        the platform operator (token scoped to no organization)
"""


def row(default=None, **statuses):
    """One operation's expected status per principal; ``default`` for everyone not named."""
    table = {p: statuses.get(p, default) for p in PRINCIPALS}
    assert None not in table.values(), statuses
    return table


def org_row(ok, *allowed):
    """An organization path of A: bad tokens 401, tokens of elsewhere 403 (wrong_organization),
    members of A and the superuser ``ok`` if named in ``allowed``, else 403."""
    return row(403, **{p: 401 for p in INVALID}, **{p: ok for p in allowed})


def user_row(ok, **others):
    return row(ok, **{p: 401 for p in INVALID}, **others)


def operator_row(ok):
    return row(403, **{p: 401 for p in INVALID}, superuser=ok)


ADMINS = ("admin", "owner", "superuser")
MEMBERS = INSIDE + ("superuser",)

# Written from CONTRACT.md section 2 (and the README's documented choices), not from the code.
EXPECTED = {
    # public: the Authorization header is ignored; each caller signs up / logs in / refreshes itself
    "signup": row(201),
    # login with one's own credentials into A: only members of A get a token for A
    "login": row(200, removed=403, removed_stale=403, other_admin=403, superuser=403),
    # one's own refresh token; the removed member's pre-removal refresh token is dead
    "refresh": row(200, removed_stale=401),
    "logout": user_row(200),
    # switching into A: only members of A (multi holds a B token but is a member of A)
    "switch": user_row(403, member=200, dataset_manager=200, admin=200, owner=200, multi=200),
    "change_password": user_row(200),
    "me": user_row(200),
    # with a wrong password: every authenticated caller is told so (the success paths, and the owner's
    # 409, are in tests/test_accounts_api.py; nobody here loses their account)
    "delete_me": user_row(422),
    "create_invites": org_row(201, *ADMINS),
    "list_invites": org_row(200, *ADMINS),
    "revoke_invite": org_row(200, *ADMINS),
    # public preview of a pending invite of A by its token
    "preview_invite": row(200),
    # an invite of A addressed to someone else: nobody may use it ("user whose email matches")
    "accept_invite": user_row(403),
    "list_members": org_row(200, *MEMBERS),
    "change_member": org_row(200, *ADMINS),
    # removing another member: admins (leaving oneself is covered in test_memberships)
    "remove_member": org_row(200, *ADMINS),
    "transfer_ownership": org_row(200, "owner"),
    "get_notification_settings": org_row(200, *ADMINS),
    "put_notification_settings": org_row(200, *ADMINS),
    "list_deliveries": org_row(200, *ADMINS),
    "create_organization": user_row(201),
    "list_organizations": user_row(200),
    "get_organization": org_row(200, *MEMBERS),
    "rename_organization": org_row(200, *ADMINS),
    "set_plan": operator_row(200),
    # owner, or an admin holding can_delete_organization (A's admin does not); superusers cannot
    "delete_organization": org_row(202, "owner"),
    # asked after A's owner deleted A: A's tokens are dead (401); others who are neither requester
    # nor owner get 404 (existence not revealed); the superuser reads it
    "get_deletion": row(404, **{p: 401 for p in INVALID + INSIDE}, superuser=200),
    # the receipt link of A's deletion (its 202): public, the receipt is the credential
    "get_deletion_by_receipt": row(200),
    "export_organization": org_row(200, *ADMINS),
    "get_usage": org_row(200, *MEMBERS),
    "report_storage": operator_row(201),
    "get_ledger": org_row(200, *ADMINS),
    "grant_credits": operator_row(201),
    "reserve_credits": org_row(201, "dataset_manager", "admin", "owner", "superuser"),
    "settle_reservation": operator_row(200),
    # the activity log (issue 19): admins of A and the operator, nobody else
    "list_audit_log": org_row(200, *ADMINS),
    "verify_audit_log": org_row(200, *ADMINS),
}

# operations that run in worlds of their own, in this order (the rest share one world)
DESTRUCTIVE_GROUPS = {"transfer": ("transfer_ownership",),
                      "delete": ("delete_organization", "get_deletion", "get_deletion_by_receipt")}
GROUPED = {op for ops in DESTRUCTIVE_GROUPS.values() for op in ops}

ACCESS_2XX = {  # cross-check only: who the gateway's x-access rule could possibly let through
    "public": set(PRINCIPALS), "user": set(OUTSIDE + INSIDE + ("superuser",)), "member": set(MEMBERS),
    "dataset_manager": {"dataset_manager", "admin", "owner", "superuser"}, "admin": set(ADMINS),
    "owner": {"owner"}, "superuser": {"superuser"},
}


# -- the world: organizations A, B, C and the principals ---------------------------------------

class Org:
    def __init__(self, account, name):
        self.id, self.name = account.org_id, name


class World:
    def __init__(self, gateway, tap, test_stack, su):
        self.gateway, self.tap = gateway, tap
        tag = uuid.uuid4().hex[:10]
        owner = gateway.signup(organization_name=f"Iso A {tag}", name="A Owner")
        other = gateway.signup(organization_name=f"Iso B {tag}", name="B Owner")
        canary = gateway.signup(organization_name=f"Iso C {tag}", name="C Owner")
        self.a, self.b, self.c = Org(owner, f"Iso A {tag}"), Org(other, f"Iso B {tag}"), Org(canary, f"Iso C {tag}")
        self.owner = owner
        accounts = {"owner": owner, "other_admin": other}
        for role in ("admin", "dataset_manager", "member"):
            accounts[role] = join(gateway, tap, owner, role)
        # multi: a member of A who also joined B; holds the B-scoped token from accepting
        multi = join(gateway, tap, owner, "member", name="Multi Member")
        token, _ = invite(gateway, tap, other, multi.email)
        accepted = gateway.post(f"/invites/{token}/accept", token=multi.token)
        assert accepted.status_code == 200, accepted.text
        accounts["multi"] = Account(accepted.json(), multi.password)
        # removed: joined A, removed by the owner; keeps the old token (stale) and logs in again
        removed = join(gateway, tap, owner, "member", name="Removed Member")
        gone = gateway.delete(f"/organizations/{self.a.id}/members/{removed.user_id}", token=owner.token)
        assert gone.status_code == 200, gone.text
        wait_until(lambda: gateway.get("/me", removed.token).status_code == 401, timeout=2,
                   what="the removed member's token to be revoked")
        accounts["removed_stale"] = removed
        accounts["removed"] = self.login(removed.email, removed.password)
        assert gateway.get("/me", accounts["removed"].token).json()["organization"] is None
        accounts["superuser"] = su
        self.accounts = accounts
        # a spare account (in no organization) whose credentials the token-less callers use
        self.spare = gateway.signup(organization_name=None, name="Spare")
        now = int(time.time())
        key, kid = stranger_key()
        self.tokens = {
            "anonymous": None,
            "expired": forge(test_stack, session_of=owner, iat=now - 1000, exp=now - 10),
            "forged": forge(test_stack, key=key, kid=kid, session_of=owner, su=True),
        }
        # A's data in every service: a victim member, invites, credits and an open reservation
        self.victim = join(gateway, tap, owner, "member", name="Victim")
        self.pending_token, _ = invite(gateway, tap, owner, unique_email("invitee"))
        _, self.revocable_invite = invite(gateway, tap, owner, unique_email("revocable"))
        wait_until(lambda: gateway.get(f"/organizations/{self.a.id}/usage", su.token).status_code == 200,
                   what="usage service to know organization A")
        granted = gateway.post(f"/organizations/{self.a.id}/credits/grants",
                               {"amount": 10 ** 9, "idempotency_key": uuid.uuid4().hex}, su.token)
        assert granted.status_code == 201, granted.text
        self.reservation = self.reserve()

    def login(self, email, password, organization_id=None):
        body = {"email": email, "password": password}
        if organization_id:
            body["organization_id"] = organization_id
        response = self.gateway.post("/auth/login", body)
        assert response.status_code == 200, response.text
        return Account(response.json(), password)

    def token(self, principal):
        if principal in self.tokens:
            return self.tokens[principal]
        return self.accounts[principal].token

    def fresh_session(self, principal):
        """A new session of the principal's account, scoped like its main token."""
        if principal in INVALID:
            return self.token(principal)
        account = self.accounts[principal]
        return self.login(account.email, account.password, account.org_id).token

    def reserve(self):
        response = self.gateway.post(f"/organizations/{self.a.id}/credits/reservations", {
            "amount": 1000, "job_id": "job-" + uuid.uuid4().hex[:8], "job_type": "segmentation",
            "idempotency_key": uuid.uuid4().hex}, self.accounts["dataset_manager"].token)
        assert response.status_code == 201, response.text
        return response.json()["entry"]["id"]

    def memberships(self, principal):
        """Organizations (of A, B, C) whose data the principal may see outside A's own paths."""
        return {"member": {"a"}, "dataset_manager": {"a"}, "admin": {"a"}, "owner": {"a"},
                "multi": {"a", "b"}, "other_admin": {"b"}}.get(principal, set())


# -- one request per operation and principal --------------------------------------------------

class Call:
    def __init__(self, path, body=None, token="default", after=None, sees=()):
        self.path, self.body, self.token, self.after, self.sees = path, body, token, after, set(sees)


def _org(world, suffix=""):
    return f"/organizations/{world.a.id}{suffix}"


def _credentials(world, principal):
    if principal in ("anonymous", "expired", "forged"):
        return world.spare
    return world.accounts[principal]


def _adopt(account):
    def after(response):
        if response.status_code == 200:
            data = response.json()
            account.token, account.refresh_token = data["access_token"], data["refresh_token"]
    return after


def build_signup(world, p, ok):
    return Call("/auth/signup", {"email": unique_email("signup"), "password": "correct horse battery",
                                 "name": "New", "organization_name": f"Fresh {uuid.uuid4().hex[:6]}"})


def build_login(world, p, ok):
    account = _credentials(world, p)
    body = {"email": account.email, "password": account.password}
    if account is not world.spare:
        body["organization_id"] = world.a.id
    sees = world.memberships(p) if account is not world.spare else ()
    return Call("/auth/login", body, sees=sees)


def build_refresh(world, p, ok):
    account = _credentials(world, p)
    return Call("/auth/refresh", {"refresh_token": account.refresh_token}, after=_adopt(account),
                sees=world.memberships(p))


def build_logout(world, p, ok):
    return Call("/auth/logout", token=world.fresh_session(p))


def build_switch(world, p, ok):
    return Call("/auth/switch", {"organization_id": world.a.id}, token=world.fresh_session(p))


def build_change_password(world, p, ok):
    account = world.accounts.get(p) if p not in INVALID else None
    current = account.password if account else "correct horse battery"
    new = current + " (changed)"

    def after(response):
        if response.status_code != 200:
            return
        back = world.gateway.post("/auth/password", {"current_password": new, "new_password": current},
                                  response.json()["access_token"])
        assert back.status_code == 200, back.text
        _adopt(account)(back)
    return Call("/auth/password", {"current_password": current, "new_password": new}, after=after)


def build_me(world, p, ok):
    return Call("/me")


def build_delete_me(world, p, ok):
    return Call("/me", {"password": "not the password at all"})


def build_create_invites(world, p, ok):
    return Call(_org(world, "/invites"), {"emails": [unique_email("invitee")], "role": "member"})


def build_list_invites(world, p, ok):
    return Call(_org(world, "/invites"))


def build_revoke_invite(world, p, ok):
    invite_id = invite(world.gateway, world.tap, world.owner, unique_email("revoked"))[1] if ok \
        else world.revocable_invite
    return Call(_org(world, f"/invites/{invite_id}"))


def build_preview_invite(world, p, ok):
    return Call(f"/invites/{world.pending_token}", sees={"a"})


def build_accept_invite(world, p, ok):
    return Call(f"/invites/{world.pending_token}/accept")


def build_list_members(world, p, ok):
    return Call(_org(world, "/members"))


def build_change_member(world, p, ok):
    return Call(_org(world, f"/members/{world.victim.user_id}"), {"role": "dataset_manager"})


def build_remove_member(world, p, ok):
    victim = join(world.gateway, world.tap, world.owner, "member", name="Victim") if ok else world.victim
    return Call(_org(world, f"/members/{victim.user_id}"))


def build_transfer_ownership(world, p, ok):
    return Call(_org(world, "/ownership"), {"user_id": world.accounts["admin"].user_id})


def build_get_notification_settings(world, p, ok):
    return Call(_org(world, "/notifications"))


def build_put_notification_settings(world, p, ok):
    return Call(_org(world, "/notifications"), {"plan_email": None, "new_user_email": None,
                                                "ai_job_recipients": "initiator_and_admins"})


def build_list_deliveries(world, p, ok):
    return Call(_org(world, "/notifications/deliveries"))


def build_list_audit_log(world, p, ok):
    return Call(_org(world, "/audit-log?limit=200"))


def build_verify_audit_log(world, p, ok):
    return Call(_org(world, "/audit-log/verify"))


def build_create_organization(world, p, ok):
    return Call("/organizations", {"name": f"Own {uuid.uuid4().hex[:6]}"}, sees=world.memberships(p))


def build_list_organizations(world, p, ok):
    return Call("/organizations")


def build_get_organization(world, p, ok):
    return Call(_org(world))


def build_rename_organization(world, p, ok):
    return Call(_org(world), {"name": world.a.name})  # same name: A's markers stay valid


def build_set_plan(world, p, ok):
    return Call(_org(world, "/plan"), {"name": "custom", "included_users": None, "included_storage_bytes": None,
                                       "paid_until": None})


def build_delete_organization(world, p, ok):
    def after(response):
        if response.status_code == 202:
            world.receipt_url = response.json()["receipt_url"]
    return Call(_org(world), {"confirm_name": world.a.name}, after=after)


def build_get_deletion(world, p, ok):
    return Call(_org(world, "/deletion"))


def build_get_deletion_by_receipt(world, p, ok):
    return Call(world.receipt_url[len("/api/v1"):], sees={"a"})


def build_export_organization(world, p, ok):
    return Call(_org(world, "/export"))


def build_get_usage(world, p, ok):
    return Call(_org(world, "/usage"))


def build_report_storage(world, p, ok):
    return Call(_org(world, "/storage-reports"), {"datasets": [{"dataset_id": "ds-1", "bytes": 1234}],
                                                   "complete": True})


def build_get_ledger(world, p, ok):
    return Call(_org(world, "/credits"))


def build_grant_credits(world, p, ok):
    return Call(_org(world, "/credits/grants"), {"amount": 1000, "idempotency_key": uuid.uuid4().hex})


def build_reserve_credits(world, p, ok):
    return Call(_org(world, "/credits/reservations"), {
        "amount": 1, "job_id": "job-" + uuid.uuid4().hex[:8], "job_type": "segmentation",
        "idempotency_key": uuid.uuid4().hex})


def build_settle_reservation(world, p, ok):
    reservation = world.reserve() if ok else world.reservation
    return Call(_org(world, f"/credits/reservations/{reservation}/settle"), {"outcome": "failed"})


BUILDERS = {name[len("build_"):]: value for name, value in globals().items() if name.startswith("build_")}


# -- running a row -----------------------------------------------------------------------------

def path_regex(template):
    return re.compile("^" + re.sub(r"\\{[a-z_]+\\}", "[^/]+", re.escape(template)) + "$")


def run_row(world, document, operation_id):
    """Run one operation for every principal (those expected to succeed last); return the problems."""
    method, template = operation_of(document, operation_id)
    expected = EXPECTED[operation_id]
    problems = []
    for principal in sorted(PRINCIPALS, key=lambda p: 200 <= expected[p] < 300):
        ok = 200 <= expected[principal] < 300
        call = BUILDERS[operation_id](world, principal, ok)
        assert path_regex(template).match("/api/v1" + call.path.split("?")[0]), (call.path, template)
        token = world.token(principal) if call.token == "default" else call.token
        response = world.gateway.request(method, call.path, token, json=call.body)
        problems += check(world, operation_id, principal, call, response, expected[principal])
        if call.after is not None:
            call.after(response)
    return problems


def check(world, operation_id, principal, call, response, expected):
    where = f"{operation_id} as {principal}"
    problems = []
    if response.status_code != expected:
        problems.append(f"{where}: expected {expected}, got {response.status_code} {response.text[:300]}")
    if response.status_code >= 400:
        body = response.json()
        if set(body) != {"error"} or set(body["error"]) != {"code", "message", "details"}:
            problems.append(f"{where}: error without the contract's shape: {response.text[:300]}")
    text = response.text
    org_path = call.path.startswith(f"/organizations/{world.a.id}")
    may_see = ({"a"} if principal in MEMBERS else set()) if org_path else world.memberships(principal) | call.sees
    for label, org in (("a", world.a), ("b", world.b), ("c", world.c)):
        if label in may_see:
            continue
        markers = [org.name] + ([] if org.id in call.path or org.id in repr(call.body) else [org.id])
        for marker in markers:
            if marker in text:
                problems.append(f"{where}: response leaks organization {label.upper()} ({marker!r}): {text[:300]}")
    return problems


def operation_of(document, operation_id):
    for path, methods in document["paths"].items():
        for method, entry in methods.items():
            if entry["operationId"] == operation_id:
                return method.upper(), path
    raise AssertionError(f"operation {operation_id} is not in the OpenAPI document")


# -- the tests -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def document(gateway):
    response = gateway.get("/openapi.json")
    assert response.status_code == 200
    return response.json()


@pytest.fixture(scope="module")
def superuser(gateway):
    response = gateway.post("/auth/login", SUPERUSER)
    assert response.status_code == 200, response.text
    return Account(response.json(), SUPERUSER["password"])


@pytest.fixture(scope="module")
def world(gateway, tap, test_stack, superuser):
    return World(gateway, tap, test_stack, superuser)


def test_matrix_covers_exactly_the_documented_operations(document):
    documented = {entry["operationId"] for methods in document["paths"].values() for entry in methods.values()}
    assert set(EXPECTED) == documented, ("add a row to EXPECTED for", documented - set(EXPECTED),
                                         "remove rows for", set(EXPECTED) - documented)
    assert set(BUILDERS) == set(EXPECTED), set(BUILDERS) ^ set(EXPECTED)
    assert all(set(statuses) == set(PRINCIPALS) for statuses in EXPECTED.values())


def test_expected_table_never_allows_more_than_the_declared_access(document):
    for methods in document["paths"].values():
        for entry in methods.values():
            allowed = {p for p, s in EXPECTED[entry["operationId"]].items() if 200 <= s < 300}
            assert allowed <= ACCESS_2XX[entry["x-access"]], (entry["operationId"], entry["x-access"], allowed)


SHARED_WORLD_OPERATIONS = [op for op in EXPECTED if op not in GROUPED]


@pytest.mark.parametrize("operation_id", SHARED_WORLD_OPERATIONS)
def test_isolation(world, document, operation_id):
    problems = run_row(world, document, operation_id)
    assert not problems, "\n".join(problems)


def test_isolation_ownership_transfer(gateway, tap, test_stack, superuser, document):
    world = World(gateway, tap, test_stack, superuser)
    problems = run_row(world, document, "transfer_ownership")
    assert not problems, "\n".join(problems)


def test_isolation_organization_deletion(gateway, tap, test_stack, superuser, document):
    world = World(gateway, tap, test_stack, superuser)
    problems = run_row(world, document, "delete_organization")
    assert not problems, "\n".join(problems)
    # deletion kills A's tokens (within the contract's second) before the status is asked
    wait_until(lambda: gateway.get("/me", world.owner.token).status_code == 401, timeout=2,
               what="A's tokens to die after deletion")
    problems = run_row(world, document, "get_deletion")
    assert not problems, "\n".join(problems)
    problems = run_row(world, document, "get_deletion_by_receipt")
    assert not problems, "\n".join(problems)
