"""The API as integrators meet it (issue 16): what the OpenAPI document says, content types, 405's
``Allow``, the organization of login and refresh, idempotent retries after a timeout, and deleting
one's own account. Everything through the real gateway."""
import os
import uuid

import pymongo
import pytest

from stack import stack
from tests.support import assert_error, join, side_gateway, superuser_token, unique_email, wait_until
from tests.test_deletion import documents_mentioning

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def document(gateway):
    response = gateway.get("/openapi.json")
    assert response.status_code == 200
    return response.json()


def operations(document):
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


def resolve(document, schema):
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


# -- the document ------------------------------------------------------------------------------

def test_the_document_passes_openapi_spec_validator(document):
    from openapi_spec_validator import validate
    validate(document)


def test_nullable_references_are_nullable_components(document):
    """(Why not ``allOf`` + ``nullable``: see gateway/api.py, ``_nullable_refs``.)"""
    schemas = document["components"]["schemas"]
    for name in ("SignupResponse", "Me", "ScopedTokenPair"):
        organization = schemas[name]["properties"]["organization"]
        target = organization["$ref"].rsplit("/", 1)[1]
        assert target.startswith("Nullable") and schemas[target]["nullable"] is True, organization
        assert schemas[target]["type"] == "object"
        assert schemas[target]["properties"] == schemas[target[len("Nullable"):]]["properties"]
    assert "anyOf" not in str(document)


def test_responses_are_open_and_requests_closed(document):
    responses, requests_ = set(), set()
    for _, _, operation in operations(document):
        body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
        if body:
            requests_.add(body["$ref"].rsplit("/", 1)[1])
        for answer in operation["responses"].values():
            schema = answer.get("content", {}).get("application/json", {}).get("schema")
            if schema:
                responses.add(schema["$ref"].rsplit("/", 1)[1])
    schemas = document["components"]["schemas"]
    assert requests_ and responses and not requests_ & responses
    for name in requests_:
        assert schemas[name]["additionalProperties"] is False, name
    for name, schema in schemas.items():  # every schema a response can reach is open
        if name not in requests_ and name not in ("DatasetBytes",):
            assert schema.get("additionalProperties", True) is not False, name


def test_timestamps_emails_and_enums_are_typed(document):
    schemas = document["components"]["schemas"]
    untyped = [(name, field) for name, schema in schemas.items() for field, prop in schema.get("properties", {}).items()
               if (field.endswith("_at") or field in ("paid_until", "at")) and prop.get("type") == "string"
               and prop.get("format") != "date-time"]
    assert not untyped
    for name in ("User", "Owner", "Member", "Invite"):
        assert schemas[name]["properties"]["email"]["format"] == "email", name
    enums = {("Me", "role"), ("InvitePreview", "role"), ("Invite", "status"), ("Plan", "name"), ("Delivery", "kind"),
             ("SkippedInvite", "reason"), ("LedgerEntry", "outcome")}
    for name, field in enums:
        assert schemas[name]["properties"][field].get("enum"), (name, field)
    kinds = set(schemas["Delivery"]["properties"]["kind"]["enum"])
    templates = os.listdir(os.path.join(stack.ROOT, "services", "notifications", "templates"))
    assert kinds == {t.rsplit(".", 1)[0] for t in templates} - {"base"}


def test_statuses_and_headers_are_documented(document):
    headers = document["components"]["headers"]
    assert {"RetryAfter", "Location", "IdempotentReplayed"} <= set(headers)
    for path, method, operation in operations(document):
        responses = operation["responses"]
        if "requestBody" in operation:
            assert {"413", "415"} <= set(responses), (method, path)
        for status in ("429", "503"):
            if status in responses:
                assert "Retry-After" in responses[status]["headers"], (method, path, status)
        if operation["x-idempotent"]:
            assert any(p["name"] == "Idempotency-Key" for p in operation["parameters"]), (method, path)
            success = next(v for k, v in responses.items() if k.startswith("2"))
            assert "Idempotent-Replayed" in success["headers"], (method, path)
        assert operation["security"] == ([] if operation["x-access"] == "public" else [{"bearer": []}])
        assert operation["description"] and operation["tags"]
    deletion = document["paths"]["/api/v1/organizations/{org_id}"]["delete"]["responses"]["202"]
    assert "Location" in deletion["headers"]
    idempotent = {operation["operationId"] for _, _, operation in operations(document) if operation["x-idempotent"]}
    assert idempotent == {"signup", "create_organization", "create_invites", "grant_credits", "reserve_credits"}
    assert document["servers"] and document["info"]["license"] and document["info"]["contact"]
    assert {tag["name"] for tag in document["tags"]} >= {op["tags"][0] for _, _, op in operations(document)}


# -- content types and methods -----------------------------------------------------------------

def test_a_body_that_is_not_json_is_415(gateway):
    body = {"email": unique_email(), "password": PASSWORD, "name": "Ada"}
    import json
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {"Content-Type": content_type} if content_type else {}
        response = gateway.request("POST", "/auth/signup", data=json.dumps(body).encode(), headers=headers)
        error = assert_error(response, 415, "unsupported_media_type")
        assert error["details"]["expected"] == "application/json"
    # curl -d without a content type (a form), as the issue met it
    assert_error(gateway.request("POST", "/auth/login", data="email=a@b.cd&password=x"), 415, "unsupported_media_type")
    # JSON with a charset, and +json types, are JSON
    ok = gateway.request("POST", "/auth/signup", data=json.dumps(body).encode(),
                         headers={"Content-Type": "application/json; charset=utf-8"})
    assert ok.status_code == 201, ok.text


def test_405_names_the_allowed_methods(gateway, owner):
    response = gateway.request("PUT", f"/organizations/{owner.org_id}", owner.token, json={})
    assert_error(response, 405, "method_not_allowed")
    allowed = {m.strip() for m in response.headers["Allow"].split(",")}
    assert {"GET", "PATCH", "DELETE"} <= allowed and "PUT" not in allowed


# -- login and refresh say which organization -----------------------------------------------------

def test_login_and_refresh_answer_the_organization_of_the_token(gateway, owner):
    login = gateway.post("/auth/login", {"email": owner.email, "password": owner.password})
    assert login.status_code == 200, login.text
    assert login.json()["organization"] == {"id": owner.org_id, "name": owner.data["organization"]["name"],
                                            "role": "admin", "is_owner": True}
    refresh = gateway.post("/auth/refresh", {"refresh_token": login.json()["refresh_token"]})
    assert refresh.status_code == 200, refresh.text
    assert refresh.json()["organization"] == login.json()["organization"]
    loner = gateway.signup(organization_name=None)
    alone = gateway.post("/auth/login", {"email": loner.email, "password": loner.password})
    assert alone.status_code == 200 and alone.json()["organization"] is None
    refreshed = gateway.post("/auth/refresh", {"refresh_token": alone.json()["refresh_token"]})
    assert refreshed.json()["organization"] is None


# -- idempotency ----------------------------------------------------------------------------------

def test_sign_up_with_an_idempotency_key_is_safe_to_repeat(gateway):
    key = "signup-" + uuid.uuid4().hex
    body = {"email": unique_email(), "password": PASSWORD, "name": "Ada", "organization_name": "Replay Lab"}
    first = gateway.post("/auth/signup", body, headers={"Idempotency-Key": key})
    assert first.status_code == 201, first.text
    assert "Idempotent-Replayed" not in first.headers
    again = gateway.post("/auth/signup", body, headers={"Idempotency-Key": key})
    assert again.status_code == 201, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["user"] == first.json()["user"]
    assert again.json()["organization"] == first.json()["organization"]
    me = gateway.get("/me", again.json()["access_token"]).json()
    assert [o["id"] for o in me["organizations"]] == [first.json()["organization"]["id"]]
    # the same key with another organization name, or another password, is not the same sign-up
    assert_error(gateway.post("/auth/signup", dict(body, organization_name="Other"), headers={"Idempotency-Key": key}),
                 409, "conflict")
    assert_error(gateway.post("/auth/signup", dict(body, password="another password!"),
                              headers={"Idempotency-Key": key}), 409, "conflict")
    # without the key a second sign-up is what it always was
    assert_error(gateway.post("/auth/signup", body), 409, "email_taken")
    assert_error(gateway.post("/auth/signup", body, headers={"Idempotency-Key": "bad key with spaces"}),
                 422, "validation_failed")


def test_sign_up_through_an_invite_with_an_idempotency_key(gateway, tap, owner):
    from tests.support import invite
    email = unique_email("invitee")
    token, _ = invite(gateway, tap, owner, email)
    body = {"email": email, "password": PASSWORD, "name": "Grace", "invite_token": token}
    key = uuid.uuid4().hex
    first = gateway.post("/auth/signup", body, headers={"Idempotency-Key": key})
    assert first.status_code == 201, first.text
    again = gateway.post("/auth/signup", body, headers={"Idempotency-Key": key})
    assert again.status_code == 201, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["user"]["id"] == first.json()["user"]["id"]
    assert again.json()["organization"]["id"] == owner.org_id


def test_creating_an_organization_with_an_idempotency_key(gateway, owner):
    key = uuid.uuid4().hex
    first = gateway.post("/organizations", {"name": "Second Lab"}, owner.token, headers={"Idempotency-Key": key})
    assert first.status_code == 201, first.text
    again = gateway.post("/organizations", {"name": "Second Lab"}, owner.token, headers={"Idempotency-Key": key})
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    names = [o["name"] for o in gateway.get("/organizations", owner.token).json()["items"]]
    assert names.count("Second Lab") == 1
    assert_error(gateway.post("/organizations", {"name": "Third Lab"}, owner.token, headers={"Idempotency-Key": key}),
                 409, "conflict")


def test_grants_and_reservations_take_the_header_or_the_body_key(gateway, owner):
    su = superuser_token(gateway)
    grants = f"/organizations/{owner.org_id}/credits/grants"
    key = uuid.uuid4().hex
    first = gateway.post(grants, {"amount": 5000}, su, headers={"Idempotency-Key": key})
    assert first.status_code == 201, first.text
    replay = gateway.post(grants, {"amount": 5000, "idempotency_key": key}, su)  # the body key is the same key
    assert replay.status_code == 201 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == first.json()
    assert_error(gateway.post(grants, {"amount": 5000}, su), 422, "validation_failed")
    assert_error(gateway.post(grants, {"amount": 5000, "idempotency_key": "a"}, su, headers={"Idempotency-Key": "b"}),
                 422, "validation_failed")
    reservations = f"/organizations/{owner.org_id}/credits/reservations"
    job = {"amount": 1000, "job_id": "job-1", "job_type": "segmentation"}
    key = uuid.uuid4().hex
    one = gateway.post(reservations, job, owner.token, headers={"Idempotency-Key": key})
    two = gateway.post(reservations, job, owner.token, headers={"Idempotency-Key": key})
    assert (one.status_code, two.status_code) == (201, 201), (one.text, two.text)
    assert two.headers["Idempotent-Replayed"] == "true" and two.json() == one.json()
    assert gateway.get(f"/organizations/{owner.org_id}/credits", owner.token).json()["balance"] == 4000


@pytest.fixture
def impatient_gateway(test_stack):
    """A second gateway whose RPC timeout is shorter than a sign-up: it answers 503 while the
    membership service goes on and creates the account, the organization and their events (a sign-up
    takes 35-80 ms on the test stack; the request itself expires after the same 20 ms if nobody took
    it, hence a few tries)."""
    with side_gateway(test_stack, "impatient", RPC_TIMEOUT="0.02") as impatient:
        yield impatient


def test_a_sign_up_that_timed_out_is_retried_safely_with_its_key(gateway, impatient_gateway, tap):
    """The issue's case: 503 after the RPC timeout, yet the account was created; the retry with the
    same key answers the account the first request made (not 409), and there is one of everything."""
    outlived, seen = 0, []
    for _ in range(10):
        key = uuid.uuid4().hex
        body = {"email": unique_email("slow"), "password": PASSWORD, "name": "Slow", "organization_name": "Slow Lab"}
        first = impatient_gateway.post("/auth/signup", body, headers={"Idempotency-Key": key})
        seen.append((first.status_code, round(first.elapsed.total_seconds(), 3)))
        if first.status_code != 503:
            continue  # answered in time after all: try again
        assert_error(first, 503, "service_unavailable")
        assert first.headers["Retry-After"]
        retry = gateway.post("/auth/signup", body, headers={"Idempotency-Key": key})
        assert retry.status_code == 201, retry.text
        user_id, org_id = retry.json()["user"]["id"], retry.json()["organization"]["id"]
        seen[-1] += (retry.status_code, retry.headers.get("Idempotent-Replayed"))
        if retry.headers.get("Idempotent-Replayed") == "true":
            outlived += 1
        me = gateway.get("/me", retry.json()["access_token"]).json()
        assert [o["id"] for o in me["organizations"]] == [org_id]
        created = tap.wait_for("organization_created", organization_id=org_id)
        assert created["owner_user_id"] == user_id
        assert len(tap.all("organization_created", organization_id=org_id)) == 1
        assert len(tap.all("member_joined", organization_id=org_id, user_id=user_id)) == 1
        if outlived:
            break
    assert outlived, ("no sign-up outlived the gateway's timeout", seen)


# -- deleting one's own account ---------------------------------------------------------------------

def test_a_person_in_no_organization_deletes_their_account(gateway, tap, test_stack, request):
    person = gateway.signup(organization_name=None)
    login = gateway.post("/auth/login", {"email": person.email, "password": PASSWORD}).json()
    assert_error(gateway.delete("/me", {"password": "wrong password!"}, person.token), 422, "validation_failed")
    assert_error(gateway.delete("/me", {}, person.token), 422, "validation_failed")
    response = gateway.delete("/me", {"password": PASSWORD}, person.token)
    assert response.status_code == 200, response.text
    assert response.json() == {"deleted": True, "user_id": person.user_id, "organizations_left": []}
    event = tap.wait_for("account_deleted", user_id=person.user_id)
    assert event["email"] == person.email and event["organization_id"] is None
    # every session ends at once: both tokens, both refresh tokens, and the password
    for token in (person.token, login["access_token"]):
        wait_until(lambda token=token: gateway.get("/me", token).status_code == 401, timeout=2, what="the token to die")
    for refresh in (person.refresh_token, login["refresh_token"]):
        assert_error(gateway.post("/auth/refresh", {"refresh_token": refresh}), 401)
    assert_error(gateway.post("/auth/login", {"email": person.email, "password": PASSWORD}), 401)
    client = pymongo.MongoClient(test_stack.mongo_url)
    request.addfinalizer(client.close)
    assert not documents_mentioning(client, test_stack, person.user_id)
    # the address is free again
    again = gateway.post("/auth/signup", {"email": person.email, "password": PASSWORD, "name": "Again"})
    assert again.status_code == 201 and again.json()["user"]["id"] != person.user_id


def test_an_owner_cannot_delete_their_account_and_a_member_leaves_on_deletion(gateway, tap, owner, test_stack,
                                                                             request):
    error = assert_error(gateway.delete("/me", {"password": PASSWORD}, owner.token), 409, "conflict")
    assert error["details"]["organizations"] == [owner.org_id]
    member = join(gateway, tap, owner, "dataset_manager")
    client = pymongo.MongoClient(test_stack.mongo_url)
    request.addfinalizer(client.close)

    def left_over(person):
        found = documents_mentioning(client, test_stack, person.user_id) + \
            documents_mentioning(client, test_stack, person.email)
        return sorted({(db, coll) for db, coll, _ in found})
    wait_until(lambda: len(left_over(member)) >= 4, timeout=15, what="the services to know the member")
    seats = lambda: gateway.get(f"/organizations/{owner.org_id}", owner.token).json()["members"]["count"]  # noqa: E731
    wait_until(lambda: seats() == 2, timeout=10, what="the join to reach the overview")
    response = gateway.delete("/me", {"password": member.password}, member.token)
    assert response.status_code == 200, response.text
    assert response.json()["organizations_left"] == [owner.org_id]
    tap.wait_for("member_left", organization_id=owner.org_id, user_id=member.user_id)
    tap.wait_for("account_deleted", user_id=member.user_id)
    ids = [m["user_id"] for m in gateway.get(f"/organizations/{owner.org_id}/members", owner.token).json()["items"]]
    assert member.user_id not in ids
    wait_until(lambda: seats() == 1, timeout=10, what="the seat to be released")
    wait_until(lambda: gateway.get("/me", member.token).status_code == 401, timeout=2, what="the token to die")
    # the owner keeps everything
    assert gateway.get("/me", owner.token).status_code == 200
    # and nothing of the person is left in any service's database (the owner's "joined" mail names
    # them in its subject only: that mail is the owner's)
    wait_until(lambda: not left_over(member), timeout=15, what="every service to forget the person")
