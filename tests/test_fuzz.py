"""API fuzzing (issue #8): schemathesis generates requests for every operation of the gateway's
OpenAPI document and every answer is checked against that document and the contract.

How the cases are made
    The document is loaded from the running gateway (``/api/v1/openapi.json``). For each operation
    schemathesis gives hypothesis strategies for valid ("positive") and invalid ("negative") input;
    one hypothesis run draws an operation, a variant and a case, ``FUZZ_CASES`` times (default
    1,000; ``make soak`` sets more). Path parameters are, in most variants, fixed to placeholders
    that are replaced at call time by real values (the caller's organization, its real members,
    invites, reservations), so requests get past the organization rule and reach the services;
    other variants leave them random. Positive cases sometimes also get real values in the body
    fields that decide success (``confirm_name``, the current password, a refresh token, ...), so the
    success paths of destructive operations are fuzzed too.

Who calls
    Real signed-up accounts: the owner of organization A for organization-scoped and user
    operations, the platform superuser for the superuser-only ones (on organization S, owned by
    someone else). A few variants keep schemathesis' own (junk or missing) Authorization header.

Destructive operations
    Each operation that can end the caller's session or organization has a principal of its own:
    ``logout``, ``delete_me``, ``delete_organization`` and ``transfer_ownership`` consume theirs (a new account /
    organization is made when a case succeeded); ``switch``, ``change_password`` and ``refresh``
    continue with the token pair the answer returned; a member removed by ``remove_member`` and an
    invite revoked or accepted are replaced. A valid token that nevertheless gets a 401 counts as a
    lost principal and fails the test (the bookkeeping above would be wrong).

Hostile shapes (issue 12, item 4)
    Besides schemathesis' own cases, a "hostile" variant takes a valid case and plants one shape that
    once gave a 500: a lone surrogate in a string (also inside a list), an out-of-range date with
    an offset (``0001-01-01T00:00:00+14:00``...), an integer beyond int64, a tampered cursor (base64
    of other JSON, wrong lengths, huge or negative numbers), or a body of 50,000 nested ``[``/``{``.
    Each must be refused with a documented 4xx in the contract's error shape.

What is asserted
    No 5xx at all (503 included), and every answer conforms: documented status code, documented
    content type, body valid against the documented schema (schemathesis' checks), invalid input
    rejected with a 4xx, and every error body exactly the contract's
    ``{"error": {"code", "message", "details"}}`` with a known snake_case code whose status is the
    response's. The figures are printed at the end of the pytest output.
"""
import base64
import collections
import contextlib
import json
import os
import re
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from common.errors import STATUS_BY_CODE
from tests.support import SUMMARY, invite, join, superuser_token, unique_email, wait_until

FUZZ_CASES = int(os.environ.get("FUZZ_CASES") or 1000)
FUZZ_WORKERS = int(os.environ.get("FUZZ_WORKERS") or 4)  # cases in flight at once
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          negative_data_rejection]
PLACEHOLDER = "fuzz-real-value"  # a fixed path parameter, replaced by a real value at call time
AUTH_PLACEHOLDER = "Bearer fuzz-real-token"
LOST_CODES = {"unauthorized", "invalid_token", "token_expired", "token_revoked"}
TOKEN_MAX_AGE = 600  # renew access tokens (refresh) long before their 15 minutes end in a long run
PASSWORD = "correct horse battery"


class Principal:
    """A caller with a live token pair; ``make`` builds a fresh one when a case consumed it."""

    def __init__(self, world, name, make, exclusive=True):
        self.world, self.name, self.make = world, name, make
        self.exclusive = exclusive  # cases can consume or re-key it: one case at a time
        self.lock = threading.RLock()
        self.account = None
        self.renewals = 0

    def get(self):
        with self.lock:
            if self.account is None:
                self.account = self.make()
                self.account.issued = time.monotonic()
                self.account.extra = getattr(self.account, "extra", {})
            elif time.monotonic() - self.account.issued > TOKEN_MAX_AGE and self.account.refresh_token:
                response = self.world.gateway.post("/auth/refresh", {"refresh_token": self.account.refresh_token})
                assert response.status_code == 200, response.text
                self.adopt(response.json())
            return self.account

    def consumed(self):
        self.account = None
        self.renewals += 1

    def adopt(self, body, password=None):
        self.account.token = body["access_token"]
        self.account.refresh_token = body["refresh_token"]
        self.account.issued = time.monotonic()
        if password is not None:
            self.account.password = password


class Superuser:
    def __init__(self, gateway):
        self.token, self.refresh_token, self.user_id, self.org_id = superuser_token(gateway), None, None, None
        self.issued = time.monotonic()


class World:
    """Organizations and accounts the cases point at (see the module docstring)."""

    def __init__(self, gateway, tap):
        self.gateway, self.tap = gateway, tap
        p = self.principals = {}
        p["owner"] = Principal(self, "owner", lambda: gateway.signup(organization_name="Fuzz A " + _hex()), False)
        p["superuser"] = Principal(self, "superuser", lambda: Superuser(gateway), False)
        p["logout"] = Principal(self, "logout", lambda: gateway.signup(organization_name=None))
        p["password"] = Principal(self, "password", lambda: gateway.signup(organization_name=None))
        p["refresh"] = Principal(self, "refresh", lambda: gateway.signup(organization_name=None))
        p["login"] = Principal(self, "login", lambda: gateway.signup(organization_name=None))
        p["unaccount"] = Principal(self, "unaccount", lambda: gateway.signup(organization_name=None))
        p["switch"] = Principal(self, "switch", self._make_switcher)
        p["invitee"] = Principal(self, "invitee", self._make_invitee)
        p["deleter"] = Principal(self, "deleter", self._make_deleter)
        p["transfer"] = Principal(self, "transfer", self._make_transferor)
        p["operated"] = Principal(self, "operated", self._make_operated, False)
        self.lock = threading.RLock()  # the world's shared lists (members, invites, reservations)
        self.tap_lock = threading.Lock()  # the event tap (invite tokens) serves one waiter at a time
        self.owner = p["owner"].get()
        self.su = p["superuser"].get()
        self.stable = self._join(self.owner, "dataset_manager")  # target of role changes
        self.victim = self._join(self.owner, "member")  # target of removals
        self.victims_removed = 0
        self.foreign_invite_token = self._invite(self.owner, unique_email("foreign"))
        self.pending_invites = [self._new_invite_id() for _ in range(2)]
        self.deleted_orgs = []
        self.receipts = ["A" * 43]  # deletion receipts from 202s (the first one is unknown: 404)
        # credits, so that reservations of A can succeed
        self._grant(self.owner.org_id, 10 ** 9)
        p["operated"].get()

    def _join(self, admin, role):
        with self.tap_lock:
            return join(self.gateway, self.tap, admin, role)

    def _invite(self, admin, email):
        with self.tap_lock:
            return invite(self.gateway, self.tap, admin, email)[0]

    # -- factories -----------------------------------------------------------------------------

    def _make_switcher(self):
        account = self.gateway.signup(organization_name="Fuzz X " + _hex())
        other = self.gateway.post("/organizations", {"name": "Fuzz Y " + _hex()}, account.token)
        assert other.status_code == 201, other.text
        account.extra = {"orgs": [account.org_id, other.json()["id"]]}
        return account

    def _make_invitee(self):
        account = self.gateway.signup(organization_name=None)
        account.extra = {"invite_token": self._invite(self.owner, account.email)}
        return account

    def _make_deleter(self):
        name = "Fuzz D " + _hex()
        account = self.gateway.signup(organization_name=name)
        account.extra = {"name": name}
        return account

    def _make_transferor(self):
        account = self.gateway.signup(organization_name="Fuzz T " + _hex())
        account.extra = {"admin": self._join(account, "admin").user_id}
        return account

    def _make_operated(self):
        """Organization S, the target of the superuser's operations, with credits and reservations."""
        account = self.gateway.signup(organization_name="Fuzz S " + _hex())
        self._grant(account.org_id, 10 ** 12)
        account.extra = {"reservations": [self._reserve(account) for _ in range(3)]}
        return account

    def _grant(self, org_id, amount):
        response = self.gateway.post(f"/organizations/{org_id}/credits/grants",
                                     {"amount": amount, "idempotency_key": _hex()}, self.su.token)
        assert response.status_code == 201, response.text

    def _reserve(self, account):
        response = self.gateway.post(f"/organizations/{account.org_id}/credits/reservations",
                                     {"amount": 1000, "job_id": _hex(), "job_type": "fuzz", "idempotency_key": _hex()},
                                     account.token)
        assert response.status_code == 201, response.text
        return response.json()["entry"]["id"]

    def _new_invite_id(self):
        response = self.gateway.post(f"/organizations/{self.owner.org_id}/invites",
                                     {"emails": [unique_email("pending")], "role": "member"}, self.owner.token)
        assert response.status_code == 201, response.text
        return response.json()["items"][0]["id"]

    # -- routing: who calls, which real values --------------------------------------------------

    def principal_for(self, operation):
        op_id = operation.definition.raw["operationId"]
        access = operation.definition.raw.get("x-access")
        name = {"logout": "logout", "change_password": "password", "switch": "switch", "accept_invite": "invitee",
                "delete_organization": "deleter", "transfer_ownership": "transfer",
                "get_deletion": "superuser", "login": "login", "refresh": "refresh",
                "delete_me": "unaccount"}.get(op_id)
        if name is None:
            name = {"public": None, "superuser": "superuser"}.get(access, "owner")
        return name

    def path_values(self, op_id, name, account):
        """Real values for each path parameter; the case picks one of each list."""
        org = account.org_id if account is not None else None
        if name == "superuser":
            org = self.principals["operated"].get().org_id
        values = {"org_id": [org]}
        if op_id == "get_deletion":
            values["org_id"] = self.deleted_orgs[-3:] + [self.owner.org_id]
        values["user_id"] = [self.victim.user_id, self.stable.user_id] + ([account.user_id] if account else [])
        values["invite_id"] = self.pending_invites
        values["reservation_id"] = self.principals["operated"].get().extra["reservations"]
        values["token"] = [self.foreign_invite_token]
        values["receipt"] = self.receipts[-3:]
        if op_id == "accept_invite" and account is not None:
            values["token"] = [account.extra["invite_token"], self.foreign_invite_token]
        return values

    def body_values(self, op_id, account):
        """Real values for body fields that decide success (positive cases only)."""
        if op_id == "login":
            login = self.principals["login"].get()
            return {"email": [login.email], "password": [login.password]}
        if op_id == "refresh":
            return {"refresh_token": [self.principals["refresh"].get().refresh_token]}
        if op_id == "switch":
            return {"organization_id": account.extra["orgs"]}
        if op_id == "change_password":
            return {"current_password": [account.password]}
        if op_id == "delete_me":
            return {"password": [account.password]}
        if op_id == "delete_organization":
            return {"confirm_name": [account.extra["name"]]}
        if op_id == "transfer_ownership":
            return {"user_id": [account.extra["admin"]]}
        return {}

    def after(self, op_id, name, account, case, response):
        """Bookkeeping after a case: consumed principals and resources are replaced."""
        if not 200 <= response.status_code < 300:
            return
        with self.lock:
            self._after(op_id, name, account, case, response.json())

    def _after(self, op_id, name, account, case, body):
        if op_id in ("logout", "delete_organization", "transfer_ownership", "accept_invite", "delete_me"):
            if op_id == "delete_organization":
                self.deleted_orgs.append(account.org_id)
                self.receipts.append(body["receipt_url"].rsplit("/", 1)[1])
            self.principals[name].consumed()
        elif op_id in ("switch", "change_password"):
            self.principals[name].adopt(body, case.body["new_password"] if op_id == "change_password" else None)
        elif op_id == "refresh" and case.body.get("refresh_token") == self.principals["refresh"].get().refresh_token:
            self.principals["refresh"].adopt(body)
        elif op_id == "remove_member" and case.path_parameters["user_id"] == self.victim.user_id:
            self.victim = self._join(self.owner, "member")
            self.victims_removed += 1
        elif op_id == "revoke_invite" and case.path_parameters["invite_id"] in self.pending_invites:
            self.pending_invites.remove(case.path_parameters["invite_id"])
            self.pending_invites.append(self._new_invite_id())
        elif op_id == "settle_reservation":
            operated = self.principals["operated"].get()
            reservations = operated.extra["reservations"]
            if case.path_parameters["reservation_id"] in reservations:
                reservations.remove(case.path_parameters["reservation_id"])
                reservations.append(self._reserve(operated))


def _hex():
    return uuid.uuid4().hex[:12]


def error_shape_problems(response):
    """The contract's error shape, for every 4xx/5xx answer."""
    if response.status_code < 400:
        return None
    try:
        body = response.json()
    except ValueError:
        return f"error body is not JSON: {response.text[:200]!r}"
    if not isinstance(body, dict) or set(body) != {"error"} or not isinstance(body["error"], dict):
        return f"error body is not {{\"error\": {{...}}}}: {body!r}"
    error = body["error"]
    if set(error) != {"code", "message", "details"}:
        return f"error keys are {sorted(error)}, not code/message/details"
    if not (isinstance(error["code"], str) and re.fullmatch(r"[a-z][a-z0-9_]*", error["code"])):
        return f'error code {error["code"]!r} is not snake_case'
    if STATUS_BY_CODE.get(error["code"]) != response.status_code:
        return f'error code {error["code"]!r} does not belong to status {response.status_code}'
    if not (isinstance(error["message"], str) and error["message"].strip()):
        return "error message is empty"
    if not isinstance(error["details"], dict):
        return "error details is not an object"
    if response.status_code in (400, 422) and error["code"] == "validation_failed" and not error["details"]:
        return "a validation error without per-field details"
    return None


def _b64(raw):
    raw = raw if isinstance(raw, bytes) else json.dumps(raw).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# -- hostile shapes: each of these once answered 500 somewhere; every one must be refused (4xx) --
LONE_SURROGATES = st.builds(lambda head, surrogate, tail: head + surrogate + tail,
                            st.text(max_size=5), st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
                            st.text(max_size=5))
OFFSETS = st.sampled_from(["+14:00", "-12:00", "+00:00", "Z", "+05:30", "-00:01"])
EXTREME_DATES = st.one_of(
    st.sampled_from(["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00", "0001-01-01T00:00:00+00:00",
                     "9999-12-31T23:59:59+00:00", "1969-12-31T23:59:59Z", "9000-01-01T00:00:01Z"]),
    st.builds(lambda year, offset: f"{year:04d}-06-15T12:00:00{offset}",
              st.one_of(st.integers(1, 1969), st.integers(9001, 9999)), OFFSETS))
HUGE_INTEGERS = st.one_of(st.integers(min_value=2 ** 63), st.integers(max_value=-(2 ** 63)),
                          st.sampled_from([2 ** 64, 10 ** 20, -(10 ** 20), 2 ** 63 - 1 + 2 ** 62]))
TAMPERED_CURSORS = st.one_of(
    st.sampled_from([_b64([1, "x"]), _b64([None, "x"]), _b64(["x"]), _b64(["2024-01-01T00:00:00Z", "x", 1]),
                     _b64(["0001-01-01T00:00:00+14:00", "x"]), _b64(["9999-12-31T23:59:59-12:00", "x"]),
                     _b64({"a": 1}), _b64(b"not json"), _b64(b"[" * 300), "99999999999999999999",
                     "9223372036854775808", "-1", "-99999999999999999999", "a", "ab=c", "!!!!"]),
    st.builds(lambda a, b: _b64([a, b]), st.one_of(st.none(), st.integers(), st.text(max_size=8)),
              st.one_of(st.none(), st.integers(), st.lists(st.integers(), max_size=2))),
    st.integers(min_value=2 ** 63).map(str), st.integers(max_value=-1).map(str))
DEEP_BODIES = st.builds(lambda opening, depth: opening * depth, st.sampled_from([b"[", b'{"a":', b'[{"a":']),
                        st.integers(20_000, 60_000))
DATE_FIELDS = {"paid_until", "expires_at"}


def hostile_value(data, key, current):
    """A hostile value for the field ``key`` whose valid value was ``current``."""
    if key == "cursor":
        return data.draw(TAMPERED_CURSORS, label="hostile cursor")
    if key in DATE_FIELDS:
        return data.draw(EXTREME_DATES, label="hostile date")
    if isinstance(current, int) and not isinstance(current, bool):
        return data.draw(HUGE_INTEGERS, label="hostile integer")
    if isinstance(current, list):
        return list(current) + [data.draw(LONE_SURROGATES, label="hostile list item")]
    return data.draw(LONE_SURROGATES, label="hostile text")


class Variant:
    """One way of drawing a case for an operation."""

    hostile = False

    def __init__(self, operation, mode, real_path, real_auth):
        self.mode, self.real_path, self.real_auth = mode, real_path, real_auth
        kwargs = {}
        path_names = re.findall(r"{([a-z_]+)}", operation.path)
        if real_path and path_names:
            kwargs["path_parameters"] = {name: PLACEHOLDER for name in path_names}
        if real_auth:
            kwargs["headers"] = {"Authorization": AUTH_PLACEHOLDER}
        self.strategy = operation.as_strategy(mode, **kwargs)


class HostileVariant(Variant):
    """A valid case (real path and token) with one hostile shape planted: a field of the body or the
    query gets a hostile value, or the whole body becomes deeply nested JSON."""

    hostile = True

    def __init__(self, operation):
        super().__init__(operation, GenerationMode.POSITIVE, True, bool(operation.definition.raw.get("security")))
        raw = operation.definition.raw
        self.has_body = "requestBody" in raw
        self.query_names = [p["name"] for p in raw.get("parameters", []) if p.get("in") == "query" and "name" in p]
        for parameter in raw.get("parameters", []):  # marshmallow query schemas are expanded by apispec
            if parameter.get("in") == "query" and "schema" in parameter and "properties" in parameter["schema"]:
                self.query_names += list(parameter["schema"]["properties"])

    def plant(self, data, case):
        """Returns the raw body to send instead of the case's (deep nesting), or None."""
        slots = []
        if self.has_body and isinstance(case.body, dict):
            slots += [("body", key) for key in case.body]
        if case.query is not None:  # a URL cannot carry a lone surrogate: numbers and the cursor only
            slots += [("query", key) for key, value in case.query.items()
                      if isinstance(value, int) and not isinstance(value, bool) and key != "cursor"]
        if "cursor" in self.query_names:
            slots.append(("query", "cursor"))
        if self.has_body:
            slots.append(("raw", None))
        where, key = data.draw(st.sampled_from(slots), label="hostile slot")
        if where == "raw":
            return data.draw(DEEP_BODIES, label="deep body")
        # new containers: the drawn ones may be shared with other draws, which must not see the change
        if where == "body":
            case.body = dict(case.body, **{key: hostile_value(data, key, case.body[key])})
        else:
            case.query = dict(case.query or {}, **{key: hostile_value(data, key, (case.query or {}).get(key))})
        return None


def variants(operation):
    """Weighted variants (a variant listed n times is drawn n times as often)."""
    raw = operation.definition.raw
    has_path = "{" in operation.path
    has_input = "requestBody" in raw or any(p.get("in") == "query" for p in raw.get("parameters", []))
    secured = bool(raw.get("security"))
    out = [Variant(operation, GenerationMode.POSITIVE, True, secured)] * 6
    if has_input:
        out += [Variant(operation, GenerationMode.NEGATIVE, True, secured)] * 4
    if has_path:
        out += [Variant(operation, GenerationMode.POSITIVE, False, secured)]
        out += [Variant(operation, GenerationMode.NEGATIVE, False, secured)]
    if secured:  # schemathesis' own Authorization header: missing, malformed or junk
        out += [Variant(operation, GenerationMode.POSITIVE, True, False)]
    if has_input:
        out += [HostileVariant(operation)] * 3
    return out


class Report:
    """What the cases found; failures are grouped by operation and kind (one example each)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.submitted = 0
        self.cases = 0
        self.hostile = 0
        self.by_operation = collections.defaultdict(collections.Counter)
        self.failures = {"5xx": collections.OrderedDict(), "non-conforming": collections.OrderedDict(),
                         "lost token": collections.OrderedDict()}

    def record(self, label, status):
        with self.lock:
            self.cases += 1
            self.by_operation[label][status] += 1

    def fail(self, kind, key, text):
        with self.lock:
            count, example = self.failures[kind].get(key, (0, text))
            self.failures[kind][key] = (count + 1, example)

    def count(self, kind):
        return sum(count for count, _ in self.failures[kind].values())

    def examples(self, limit=10):
        out = []
        for kind, found in self.failures.items():
            for key, (count, example) in found.items():
                out.append(f'[{kind} x{count}] {" ".join(map(str, key))}\n{example}')
        return out[:limit]


def failure_title(failure):
    """The names of schemathesis' failed checks, e.g. 'Undocumented status code'."""
    titles = [getattr(f, "title", type(f).__name__) for f in getattr(failure, "exceptions", [failure])]
    return ", ".join(sorted(set(titles)))


def test_fuzz_every_operation(gateway, tap, request):
    started = time.monotonic()
    schema = schemathesis.openapi.from_url(gateway.api + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 30, f"the document lists {len(operations)} operations"
    world = World(gateway, tap)
    table = [(operation, variants(operation)) for operation in operations]
    sessions = threading.local()
    report = Report()
    setup_seconds = time.monotonic() - started

    def run_hostile(operation, variant, case, raw_body, label):
        """Send a hostile case as it is (schemathesis would re-serialize or refuse it) and check it
        was refused: a documented 4xx, JSON, the contract's error shape."""
        # built by hand: schemathesis would revalidate the edited case first, and its validator
        # cannot even take a lone surrogate
        kwargs = {"method": case.method, "url": gateway.base_url + case.formatted_path}
        headers = {key: value for key, value in (case.headers or {}).items() if key.lower() != "content-type"}
        if raw_body is not None:
            kwargs["data"] = raw_body
        elif variant.has_body and isinstance(case.body, (dict, list, str, int, float, bool)):  # not NOT_SET
            kwargs["data"] = json.dumps(case.body).encode()  # escapes a lone surrogate as \udXXX
        if "data" in kwargs:
            headers["Content-Type"] = "application/json"
        if case.query is not None:
            kwargs["params"] = case.query
        try:
            response = sessions.http.request(headers=headers, timeout=15, **kwargs)
        except requests.RequestException as error:
            report.record(operation.label, "no answer")
            report.fail("non-conforming", (operation.label, "no answer", "hostile"), repr(error))
            return None
        report.record(operation.label, response.status_code)
        shown = (f'(hostile {label}) {kwargs.get("method")} {kwargs.get("url")} '
                 f'{((raw_body[:40] + b"...") if raw_body else (case.body, case.query))!r}')
        if response.status_code >= 500:
            report.fail("5xx", (operation.label, response.status_code, "hostile"),
                        f"{response.text[:300]}\n{shown}")
        elif not 400 <= response.status_code < 500:
            report.fail("non-conforming", (operation.label, response.status_code, "hostile shape accepted"), shown)
        if str(response.status_code) not in operation.definition.raw["responses"]:
            report.fail("non-conforming", (operation.label, response.status_code, "undocumented (hostile)"), shown)
        if not response.headers.get("Content-Type", "").startswith("application/json"):
            report.fail("non-conforming", (operation.label, response.status_code, "not JSON (hostile)"), shown)
        problem = error_shape_problems(response)
        if problem:
            report.fail("non-conforming", (operation.label, response.status_code, problem), shown)
        return response

    def run_case(operation, variant, case, pick, inject, raw_body=None, hostile_label=None):
        op_id = operation.definition.raw["operationId"]
        name = world.principal_for(operation)
        principal = world.principals[name] if name else None
        # a principal that a case can consume or re-key is used by one case at a time
        with principal.lock if principal is not None and principal.exclusive else contextlib.nullcontext():
            account = principal.get() if principal else None
            if variant.real_path and case.path_parameters:
                values = world.path_values(op_id, name, account)
                for key in list(case.path_parameters):
                    if case.path_parameters[key] == PLACEHOLDER:
                        case.path_parameters[key] = values[key][pick % len(values[key])]
            if variant.real_auth:
                case.headers["Authorization"] = "Bearer " + account.token
            # (never into a hostile case: the real value would replace the planted one)
            positive = variant.mode == GenerationMode.POSITIVE and not variant.hostile
            if inject and positive and isinstance(case.body, dict):
                for key, choices in world.body_values(op_id, account).items():
                    if key in case.body:  # all of them are required fields
                        case.body[key] = choices[pick % len(choices)]
            if not hasattr(sessions, "http"):
                sessions.http = requests.Session()
            if variant.hostile:
                response = run_hostile(operation, variant, case, raw_body, hostile_label)
                if response is not None and 200 <= response.status_code < 300:
                    world.after(op_id, name, account, case, response)
                return
            try:
                response = case.call(session=sessions.http, base_url=gateway.base_url, timeout=15)
            except requests.RequestException as error:
                report.record(operation.label, "no answer")
                report.fail("non-conforming", (operation.label, "no answer"),
                            f"{error!r}\n{case.as_curl_command()}")
                return
            report.record(operation.label, response.status_code)
            if response.status_code >= 500:
                report.fail("5xx", (operation.label, response.status_code),
                            f"{response.text[:300]}\n{case.as_curl_command()}")
            try:
                case.validate_response(response, checks=CHECKS)
            except BaseException as failure:  # schemathesis raises a FailureGroup (an exception group)
                if isinstance(failure, (KeyboardInterrupt, SystemExit)):
                    raise
                report.fail("non-conforming", (operation.label, response.status_code, failure_title(failure)),
                            f"({variant.mode.value} case) {failure}")
            problem = error_shape_problems(response)
            if problem:
                report.fail("non-conforming", (operation.label, response.status_code, problem),
                            case.as_curl_command())
            if (variant.real_auth and response.status_code == 401
                    and response.json().get("error", {}).get("code") in LOST_CODES):
                report.fail("lost token", (operation.label, name), response.text[:200])
                principal.consumed()  # go on with a new one; the test still fails
                return
            if 200 <= response.status_code < 300:
                world.after(op_id, name, account, case, response)

    pool = ThreadPoolExecutor(FUZZ_WORKERS)
    slots = threading.BoundedSemaphore(2 * FUZZ_WORKERS)
    crashes = []

    def execute(*args):
        try:
            run_case(*args)
        except BaseException as error:  # the test's own machinery failed: stop and show it
            crashes.append(error)
        finally:
            slots.release()

    @settings(max_examples=FUZZ_CASES, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), print_blob=False)
    @given(st.data())
    def fuzz(data):
        operation, choices = data.draw(st.sampled_from(table), label="operation")
        variant = data.draw(st.sampled_from(choices), label="variant")
        case = data.draw(variant.strategy, label="case")
        pick = data.draw(st.integers(0, 11), label="pick")
        inject = data.draw(st.integers(0, 2), label="inject") > 0
        raw_body = hostile_label = None
        if variant.hostile:
            raw_body = variant.plant(data, case)
            hostile_label = "deep body" if raw_body is not None else "field"
        # checked after drawing: a call that draws less than another with the same start is, to
        # hypothesis, a flaky strategy (calls beyond max_examples happen when some draws overran)
        if report.submitted >= FUZZ_CASES or crashes:
            return
        if variant.hostile:
            report.hostile += 1
        slots.acquire()  # generation runs ahead of the workers by at most 2 x FUZZ_WORKERS cases
        report.submitted += 1
        pool.submit(execute, operation, variant, case, pick, inject, raw_body, hostile_label)

    rounds = 0
    while report.submitted < FUZZ_CASES and rounds < 5 and not crashes:  # hypothesis may stop early
        fuzz()
        rounds += 1
    pool.shutdown(wait=True)
    if crashes:
        raise crashes[0]
    fuzz_seconds = time.monotonic() - started - setup_seconds

    # leave a quiet system behind: the mail the cases caused is out before the next test
    def mail_settled():
        for org_id in (world.owner.org_id, world.principals["operated"].get().org_id):
            page = gateway.get(f"/organizations/{org_id}/notifications/deliveries?limit=200", world.su.token)
            if page.status_code != 200 or any(d["status"] == "queued" for d in page.json()["items"]):
                return False
        return True
    wait_until(mail_settled, timeout=60, interval=0.5, what="the fuzzing's mail to be delivered")

    covered = [label for label, counts in report.by_operation.items() if sum(counts.values())]
    statuses = collections.Counter()
    for counts in report.by_operation.values():
        for status, n in counts.items():
            statuses[status if isinstance(status, str) else f"{status // 100}xx"] += n
    reached = [label for label, counts in report.by_operation.items()
               if any(isinstance(s, int) and s not in (401, 403) for s in counts)]
    figures = [
        f'API fuzzing (schemathesis {schemathesis.__version__}, {FUZZ_WORKERS} workers): {report.cases} cases in '
        f'{fuzz_seconds:.0f} s (+{setup_seconds:.0f} s setup), {len(covered)}/{len(operations)} operations covered, '
        f'{report.count("5xx")} 5xx, {report.count("non-conforming")} non-conforming, {report.count("lost token")} '
        'lost tokens',
        f'  statuses: {", ".join(f"{kind} {count}" for kind, count in sorted(statuses.items(), key=str))}; '
        f'{len(reached)}/{len(operations)} operations answered past authorization (not only 401/403); {report.hostile} '
        'hostile cases',
        "  renewed: " + ", ".join(f"{n} {p.renewals}" for n, p in world.principals.items() if p.renewals)
        + f", removed members {world.victims_removed}, deleted organizations {len(world.deleted_orgs)}",
    ]
    request.config.stash.setdefault(SUMMARY, []).extend(figures)
    detail = "\n".join(figures) + "\n\n" + "\n\n".join(report.examples())
    assert report.cases >= FUZZ_CASES, detail
    assert len(covered) == len(operations), detail
    assert not report.count("5xx"), detail
    assert not report.count("non-conforming"), detail
    assert not report.count("lost token"), detail
    # path parameters point at real resources: every operation got answers beyond 401/403
    assert len(reached) == len(operations), detail
