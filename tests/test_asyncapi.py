"""The AsyncAPI document (issue 15): served, valid for the official parser, true to what the
services publish, and in agreement with the README's event table.

The parser (``@asyncapi/parser``, pinned in ``tests/asyncapi/package-lock.json``) is installed by
this module under ``.venv/asyncapi`` with ``npm ci`` the first time (a few seconds)."""
import filecmp
import json
import os
import re
import shutil
import subprocess
import uuid

import jsonschema
import pytest

from common.asyncapi import document
from stack import stack
from tests.support import invite, join, superuser_token, unique_email

HERE = os.path.join(stack.ROOT, "tests", "asyncapi")
TOOLS = os.path.join(stack.ROOT, ".venv", "asyncapi")
FILES = ("package.json", "package-lock.json", "validate.mjs")
SOURCES = ("org", "membership", "notifications", "usage", "audit")
#: every payload's fields, named once above the README's table rather than in each row
COMMON_FIELDS = {"event_id", "occurred_at", "organization_id", "actor", "request_id"}


@pytest.fixture(scope="module")
def parser():
    """``node validate.mjs`` with the pinned parser, installed when missing or out of date."""
    installed = os.path.isdir(os.path.join(TOOLS, "node_modules", "@asyncapi", "parser")) and all(
        os.path.exists(os.path.join(TOOLS, name)) and filecmp.cmp(os.path.join(HERE, name), os.path.join(TOOLS, name),
                                                                 shallow=False) for name in FILES)
    if not installed:
        os.makedirs(TOOLS, exist_ok=True)
        for name in FILES:
            shutil.copy(os.path.join(HERE, name), TOOLS)
        subprocess.run(["npm", "ci", "--silent", "--no-audit", "--no-fund", "--prefix", TOOLS], check=True,
                       timeout=600)
    return ["node", os.path.join(TOOLS, "validate.mjs")]


@pytest.fixture(scope="module")
def served(gateway):
    response = gateway.get("/asyncapi.json")
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    return response.json()


def test_the_served_document_is_the_generated_one_and_the_official_parser_accepts_it(served, parser, tmp_path):
    assert served == json.loads(json.dumps(document()))
    assert served["asyncapi"].startswith("3.")
    path = tmp_path / "asyncapi.json"
    path.write_text(json.dumps(served))
    result = subprocess.run(parser + [str(path)], capture_output=True, text=True, timeout=120)
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert result.returncode == 0 and lines and lines[-1]["errors"] == 0, (result.stdout, result.stderr)
    assert lines[-1]["diagnostics"] == 0, result.stdout  # not even a warning


def payload_validator(doc, event_type):
    """A JSON Schema validator for ``event_type``'s payload, resolving refs inside ``doc``."""
    message = doc["components"]["messages"][event_type]
    return jsonschema.Draft7Validator(dict(message["payload"], components=doc["components"]))


def headers_validator(doc):
    return jsonschema.Draft7Validator(dict(doc["components"]["schemas"]["CloudEventsHeaders"],
                                           components=doc["components"]))


def check_against(doc, messages):
    """Every event (routing key, body, properties, headers) is described by ``doc``: its channel
    (exchange + routing key) exists, its body validates against its payload schema, its
    CloudEvents headers against the headers schema. Returns the (source, type) pairs seen."""
    seen, problems = set(), []
    for routing_key, body, properties, headers in messages:
        source = properties.get("app_id")
        channel = doc["channels"].get(f"{source}.{routing_key}")
        if channel is None or channel["bindings"]["amqp"]["exchange"]["name"] != f"{source}.events":
            problems.append(f"no channel for {routing_key} on {source}.events")
            continue
        errors = [e.message for e in payload_validator(doc, routing_key).iter_errors(body)]
        errors += [e.message for e in headers_validator(doc).iter_errors(
            {k: v for k, v in headers.items() if k.startswith("cloudEvents:")})]
        if errors:
            problems.append((routing_key, body, errors))
        seen.add((source, routing_key))
    assert not problems, problems[:5]
    return seen


def test_every_event_of_a_journey_matches_the_document(served, gateway, tap):
    """A journey that publishes every kind of event but account_deleted (tested wherever accounts
    are deleted; the tap's messages are checked here too, whatever earlier modules caused)."""
    start = len(tap.messages)
    su = superuser_token(gateway)
    owner = gateway.signup(organization_name=f"AsyncAPI Lab {uuid.uuid4().hex[:6]}")
    org = f"/organizations/{owner.org_id}"
    assert gateway.patch(org, {"name": "AsyncAPI Lab renamed"}, owner.token).status_code == 200
    assert gateway.request("PUT", org + "/plan", su, json={"name": "team", "included_users": 10,
                                                          "included_storage_bytes": 10 ** 9,
                                                          "paid_until": None}).status_code == 200
    manager = join(gateway, tap, owner, "dataset_manager")
    admin = join(gateway, tap, owner, "admin")
    assert gateway.patch(org + f"/members/{manager.user_id}", {"role": "member"}, owner.token).status_code == 200
    assert gateway.patch(org + f"/members/{manager.user_id}", {"role": "dataset_manager"},
                         owner.token).status_code == 200
    assert gateway.patch(org + f"/members/{admin.user_id}", {"can_delete_organization": True},
                         owner.token).status_code == 200
    _, revoked = invite(gateway, tap, owner, unique_email("revoked"))
    assert gateway.delete(org + f"/invites/{revoked}", None, owner.token).status_code == 200
    assert gateway.request("PUT", org + "/notifications", owner.token, json={
        "plan_email": None, "new_user_email": None, "ai_job_recipients": "admins"}).status_code == 200
    assert gateway.post(org + "/ownership", {"user_id": admin.user_id}, owner.token).status_code == 200
    assert gateway.post(org + "/storage-reports", {"datasets": [{"dataset_id": "d1", "bytes": 1234}],
                                                   "complete": True}, su).status_code == 201
    assert gateway.post(org + "/credits/grants", {"amount": 5000, "idempotency_key": uuid.uuid4().hex},
                        su).status_code == 201
    manager_token = gateway.post("/auth/login", {"email": manager.email, "password": manager.password,
                                                 "organization_id": owner.org_id}).json()["access_token"]
    reserved = gateway.post(org + "/credits/reservations",
                            {"amount": 2000, "job_id": "job-1", "job_type": "segmentation",
                                                            "idempotency_key": uuid.uuid4().hex}, manager_token)
    assert reserved.status_code == 201, reserved.text
    settled = gateway.post(org + f'/credits/reservations/{reserved.json()["entry"]["id"]}/settle',
                           {"outcome": "succeeded"}, su)
    assert settled.status_code == 200, settled.text
    assert gateway.delete(org + f"/members/{manager.user_id}", token=manager_token).status_code in (200, 204)
    # the transfer moved the new owner's cut-off: their token from before it is void
    owner_token = gateway.post("/auth/login", {"email": admin.email, "password": admin.password,
                                               "organization_id": owner.org_id}).json()["access_token"]
    deleted = gateway.delete(org, {"confirm_name": "AsyncAPI Lab renamed"}, owner_token)
    assert deleted.status_code == 202, deleted.text
    tap.wait_for("organization_deleted", organization_id=owner.org_id, timeout=60)

    everything = {(source, event_type) for source, event_type in
                  ((c["bindings"]["amqp"]["exchange"]["name"][:-len(".events")], c["address"])
                   for c in served["channels"].values())}
    seen = check_against(served, tap.messages[start:])
    assert everything - seen == {("membership", "account_deleted")}, sorted(everything - seen)
    check_against(served, tap.messages)  # and every event seen in this session so far


def readme_events():
    """``{(source, type): {fields named}}`` from the README's Events table."""
    with open(os.path.join(stack.ROOT, "README.md")) as handle:
        text = handle.read()
    section = text.split("## Events", 1)[1].split("\n## ", 1)[0]
    table = section.split("| source | type | payload |", 1)[1].split("\n\n", 1)[0]
    rows = {}
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[1].startswith("`"):
            continue
        sources = SOURCES if cells[0] == "each service" else (cells[0],)
        # field names: the identifiers inside backticks of the payload cell, before any ": values"
        named = set()
        for quoted in re.findall(r"`([^`]*)`", "|".join(cells[2:])):
            for part in quoted.split(","):
                name = part.split(":")[0].strip().rstrip("?")
                if re.fullmatch(r"[a-z_]+", name):
                    named.add(name)
        for source in sources:
            rows[(source, cells[1].strip("`"))] = named - COMMON_FIELDS
    return rows


def test_the_readme_event_table_and_the_document_agree(served):
    readme = readme_events()
    described = {}
    for channel in served["channels"].values():
        source = channel["bindings"]["amqp"]["exchange"]["name"][:-len(".events")]
        [message_ref] = channel["messages"].values()
        message = served["components"]["messages"][message_ref["$ref"].rsplit("/", 1)[1]]
        schema = served["components"]["schemas"][message["payload"]["$ref"].rsplit("/", 1)[1]]
        described[(source, channel["address"])] = set(schema["properties"]) - COMMON_FIELDS
    assert set(readme) == set(described), (sorted(set(readme) ^ set(described)))
    disagree = {event: {"README only": sorted(readme[event] - fields), "document only": sorted(fields - readme[event])}
                for event, fields in described.items() if readme[event] != fields}
    assert not disagree, disagree
