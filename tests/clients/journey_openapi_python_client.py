"""A journey through the API with the client openapi-python-client generated (no hand edits).

Run by tests/clients/test_generated_clients.py in the generators' environment:
``python journey_openapi_python_client.py <folder holding the package> <package> <gateway URL>``.
Prints one line per step; any surprise is an AssertionError (exit status 1).
"""
import importlib
import sys
import time
import uuid
from datetime import datetime

sys.path.insert(0, sys.argv[1])
pkg = sys.argv[2]
BASE = sys.argv[3]
client_module = importlib.import_module(pkg)
api = lambda name: importlib.import_module(f"{pkg}.api.{name}")  # noqa: E731
models = importlib.import_module(pkg + ".models")
PASSWORD = "correct horse battery"
PLANS = {"personal", "team", "power", "team_trial", "power_trial", "custom"}
DEADLINE = 60


def step(text):
    print("opc:", text, flush=True)


def call(operation, **kwargs):
    """Call ``operation.sync_detailed``; a 503 is retried after its Retry-After, as a client should."""
    deadline = time.monotonic() + DEADLINE
    while True:
        response = operation.sync_detailed(**kwargs)
        if response.status_code != 503 or time.monotonic() > deadline:
            return response
        time.sleep(int(response.headers["Retry-After"]))


anonymous = client_module.Client(base_url=BASE)


def authed(token):
    return client_module.AuthenticatedClient(base_url=BASE, token=token)


# 1. a person with no organization, signed up with an Idempotency-Key, and the replay
email = f"opc-{uuid.uuid4().hex[:12]}@example.com"
signup_body = models.SignupRequest(email=email, password=PASSWORD, name="Ada Client")
key = uuid.uuid4().hex
first = call(api("auth.signup"), client=anonymous, body=signup_body, idempotency_key=key)
assert first.status_code == 201, first.content
assert isinstance(first.parsed, models.SignupResponse), first.parsed
assert first.parsed.organization is None
assert first.parsed.user.email == email
replay = call(api("auth.signup"), client=anonymous, body=signup_body, idempotency_key=key)
assert replay.status_code == 201 and replay.headers["Idempotent-Replayed"] == "true", replay.content
assert replay.parsed.user.id == first.parsed.user.id
step("signed up without an organization; the replay answered the same account (Idempotent-Replayed)")
token = first.parsed.access_token

me = call(api("auth.me"), client=authed(token))
assert me.status_code == 200 and me.parsed.organization is None and me.parsed.role is None, me.content
assert me.parsed.organizations == []
login = call(api("auth.login"), client=anonymous, body=models.LoginRequest(email=email, password=PASSWORD))
assert login.status_code == 200 and login.parsed.organization is None, login.content
step("GET /me and login answer organization null, typed")

# 2. an organization, switched into
name = f"Client Lab {uuid.uuid4().hex[:6]}"
created = call(api("organizations.create_organization"), client=authed(token),
               body=models.CreateOrganizationRequest(name=name), idempotency_key=uuid.uuid4().hex)
assert created.status_code == 201, created.content
org_id = created.parsed.id
assert isinstance(created.parsed.created_at, datetime), created.parsed.created_at
switched = call(api("auth.switch"), client=authed(token), body=models.SwitchRequest(organization_id=org_id))
assert switched.status_code == 200 and switched.parsed.organization.id == org_id, switched.content
token = switched.parsed.access_token
refreshed = call(api("auth.refresh"), client=anonymous,
                 body=models.RefreshRequest(refresh_token=switched.parsed.refresh_token))
assert refreshed.status_code == 200 and refreshed.parsed.organization.id == org_id, refreshed.content
token = refreshed.parsed.access_token
overview = call(api("organizations.get_organization"), org_id=org_id, client=authed(token))
assert overview.status_code == 200 and overview.parsed.plan.name.value in PLANS, overview.content
step(f"created {org_id}, switched, refreshed: the token's organization is in every answer")

invited = call(api("invites.create_invites"), org_id=org_id, client=authed(token),
               body=models.InviteRequest(emails=[f"guest-{uuid.uuid4().hex[:8]}@example.com"],
                                         role=models.InviteRequestRole.MEMBER))
assert invited.status_code == 201, invited.content
assert invited.parsed.items[0].status.value == "pending"
step("invited one person")

# 3. Retry-After: the per-email login limit answers 429 with it
throwaway = f"nobody-{uuid.uuid4().hex[:8]}@example.com"
for attempt in range(30):  # noqa: B007 -- the count is reported after the loop
    refused = call(api("auth.login"), client=anonymous, body=models.LoginRequest(email=throwaway, password="wrong one"))
    if refused.status_code == 429:
        break
    assert refused.status_code == 401, refused.content
assert refused.status_code == 429, refused.content
assert int(refused.headers["Retry-After"]) >= 1
assert refused.parsed.error.code == "rate_limited"
step(f'429 after {attempt} failed logins, Retry-After {refused.headers["Retry-After"]}')

# 4. a person deletes their own account (DELETE /me)
other = call(api("auth.signup"), client=anonymous,
             body=models.SignupRequest(email=f"gone-{uuid.uuid4().hex[:8]}@example.com", password=PASSWORD,
                                       name="Leaving"))
assert other.status_code == 201, other.content
deleted = call(api("auth.delete_me"), client=authed(other.parsed.access_token),
               body=models.DeleteAccountRequest(password=PASSWORD))
assert deleted.status_code == 200 and deleted.parsed.deleted is True, deleted.content
step("DELETE /me deleted an account")

# 5. the organization's deletion: 202, Location, followed to completion without a token
accepted = call(api("organizations.delete_organization"), org_id=org_id, client=authed(token),
                body=models.DeleteOrganizationRequest(confirm_name=name))
assert accepted.status_code == 202, accepted.content
location = accepted.headers["Location"]
assert location == accepted.parsed.receipt_url and location.startswith("/api/v1/deletions/")
receipt = location.rsplit("/", 1)[1]
deadline = time.monotonic() + DEADLINE
while True:
    status = call(api("organizations.get_deletion_by_receipt"), receipt=receipt, client=anonymous)
    assert status.status_code == 200, status.content
    if status.parsed.status.value == "deleted":
        break
    assert time.monotonic() < deadline, status.parsed
    time.sleep(0.2)
assert isinstance(status.parsed.completed_at, datetime)
services = status.parsed.services
assert {services.org.value, services.membership.value, services.notifications.value, services.usage.value} == {"purged"}
step(f"202 + Location, followed to deleted ({status.parsed.completed_at.isoformat()})")
print("opc: journey complete", flush=True)
