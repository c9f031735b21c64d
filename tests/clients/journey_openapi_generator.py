"""A journey through the API with the client openapi-generator's python generator made (no hand edits).

Run by tests/clients/test_generated_clients.py in the generators' environment:
``python journey_openapi_generator.py <folder holding the package> <package> <gateway URL>``.
Prints one line per step; any surprise is an AssertionError (exit status 1).
"""
import importlib
import sys
import time
import uuid
from datetime import datetime

sys.path.insert(0, sys.argv[1])
pkg = importlib.import_module(sys.argv[2])
BASE = sys.argv[3]
PASSWORD = "correct horse battery"
PLANS = {"personal", "team", "power", "team_trial", "power_trial", "custom"}
DEADLINE = 60


def step(text):
    print("openapi-generator:", text, flush=True)


def client(token=None):
    configuration = pkg.Configuration(host=BASE, access_token=token)
    return pkg.ApiClient(configuration)


def call(method, *args, **kwargs):
    """``method`` is an ``..._with_http_info`` method; a 503 is retried after its Retry-After, as a
    client should. Other error statuses raise ``ApiException`` (status, headers, body)."""
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            return method(*args, **kwargs)
        except pkg.ApiException as error:
            if error.status != 503 or time.monotonic() > deadline:
                raise
            time.sleep(int(error.headers["Retry-After"]))


def refused(method, *args, **kwargs):
    try:
        answer = call(method, *args, **kwargs)
    except pkg.ApiException as error:
        return error
    raise AssertionError(f"expected an error status, got {answer.status_code}")


anonymous = client()
auth = pkg.AuthApi(anonymous)

# 1. a person with no organization, signed up with an Idempotency-Key, and the replay
email = f"oag-{uuid.uuid4().hex[:12]}@example.com"
signup_body = pkg.SignupRequest(email=email, password=PASSWORD, name="Grace Client")
key = uuid.uuid4().hex
first = call(auth.signup_with_http_info, signup_body, idempotency_key=key)
assert first.status_code == 201
assert first.data.organization is None, first.data
assert first.data.user.email == email
replay = call(auth.signup_with_http_info, signup_body, idempotency_key=key)
assert replay.status_code == 201 and replay.headers["Idempotent-Replayed"] == "true"
assert replay.data.user.id == first.data.user.id
step("signed up without an organization; the replay answered the same account (Idempotent-Replayed)")
token = first.data.access_token

me = call(pkg.AuthApi(client(token)).me_with_http_info)
assert me.data.organization is None and me.data.role is None and me.data.organizations == [], me.data
login = call(auth.login_with_http_info, pkg.LoginRequest(email=email, password=PASSWORD))
assert login.data.organization is None
step("GET /me and login answer organization null, typed")

# 2. an organization, switched into
name = f"Generator Lab {uuid.uuid4().hex[:6]}"
created = call(pkg.OrganizationsApi(client(token)).create_organization_with_http_info,
               pkg.CreateOrganizationRequest(name=name), idempotency_key=uuid.uuid4().hex)
assert created.status_code == 201
org_id = created.data.id
assert isinstance(created.data.created_at, datetime), created.data.created_at
switched = call(pkg.AuthApi(client(token)).switch_with_http_info, pkg.SwitchRequest(organization_id=org_id))
assert switched.data.organization.id == org_id and switched.data.organization.is_owner
refreshed = call(auth.refresh_with_http_info, pkg.RefreshRequest(refresh_token=switched.data.refresh_token))
assert refreshed.data.organization.id == org_id
token = refreshed.data.access_token
organizations = pkg.OrganizationsApi(client(token))
overview = call(organizations.get_organization_with_http_info, org_id)
assert overview.data.plan.name in PLANS and overview.data.status == "active", overview.data
step(f"created {org_id}, switched, refreshed: the token's organization is in every answer")

invited = call(pkg.InvitesApi(client(token)).create_invites_with_http_info, org_id,
               pkg.InviteRequest(emails=[f"guest-{uuid.uuid4().hex[:8]}@example.com"], role="member"))
assert invited.status_code == 201 and invited.data.items[0].status == "pending"
step("invited one person")

# 3. Retry-After: the per-email login limit answers 429 with it
throwaway = f"nobody-{uuid.uuid4().hex[:8]}@example.com"
for attempt in range(30):  # noqa: B007 -- the count is reported after the loop
    error = refused(auth.login_with_http_info, pkg.LoginRequest(email=throwaway, password="wrong one"))
    if error.status == 429:
        break
    assert error.status == 401, (error.status, error.body)
assert error.status == 429, (error.status, error.body)
assert int(error.headers["Retry-After"]) >= 1
step(f'429 after {attempt} failed logins, Retry-After {error.headers["Retry-After"]}')

# 4. a person deletes their own account (DELETE /me)
other = call(auth.signup_with_http_info, pkg.SignupRequest(
    email=f"gone-{uuid.uuid4().hex[:8]}@example.com", password=PASSWORD, name="Leaving"))
deleted = call(pkg.AuthApi(client(other.data.access_token)).delete_me_with_http_info,
               pkg.DeleteAccountRequest(password=PASSWORD))
assert deleted.status_code == 200 and deleted.data.deleted is True
step("DELETE /me deleted an account")

# 5. the organization's deletion: 202, Location, followed to completion without a token
accepted = call(organizations.delete_organization_with_http_info, org_id,
                pkg.DeleteOrganizationRequest(confirm_name=name))
assert accepted.status_code == 202
location = accepted.headers["Location"]
assert location == accepted.data.receipt_url and location.startswith("/api/v1/deletions/")
receipt = location.rsplit("/", 1)[1]
public = pkg.OrganizationsApi(anonymous)
deadline = time.monotonic() + DEADLINE
while True:
    status = call(public.get_deletion_by_receipt_with_http_info, receipt)
    if status.data.status == "deleted":
        break
    assert time.monotonic() < deadline, status.data
    time.sleep(0.2)
assert isinstance(status.data.completed_at, datetime)
services = status.data.services
assert {services.org, services.membership, services.notifications, services.usage} == {"purged"}
step(f"202 + Location, followed to deleted ({status.data.completed_at.isoformat()})")
print("openapi-generator: journey complete", flush=True)
