"""Organizations: create, list, overview, rename, plan."""
import json
from contextlib import contextmanager

from flask import Response, current_app, g, url_for

from common.events import isoformat, utcnow
from gateway import schemas as s
from gateway.api import ADMIN, MEMBER, PUBLIC, SUPERUSER, USER
from gateway.routes.common import actor, api, rpc


@api.route("/organizations", "POST", USER, "Create an organization; the caller becomes its owner",
           "organizations", body=s.CreateOrganizationRequest, response=s.OrganizationOverviewSchema, status=201,
           idempotent=True)
def create_organization(body):
    """The new token is not scoped to it: switch to it (`POST /auth/switch`) to act in it."""
    return rpc("membership", "create_organization", g.claims["sub"], body["name"], g.idempotency_key)


@api.route("/organizations", "GET", USER, "The caller's organizations", "organizations",
           response=s.OrganizationListSchema)
def list_organizations():
    return {"items": rpc("membership", "list_organizations", g.claims["sub"])}


@api.route("/organizations/<org_id>", "GET", MEMBER, "Organization overview", "organizations",
           response=s.OrganizationOverviewSchema, errors=("410",))
def get_organization(org_id):
    """Answered from the gateway's memory while nothing changed (`gateway/readmodel.py`): a write
    through any worker of the same gateway host is seen by the next read, whichever worker serves it."""
    return current_app.extensions["overviews"].read(org_id, lambda: rpc("org", "get_overview", org_id))


@contextmanager
def changing_overview(org_id):
    """Around a write the overview shows: its copies are dropped before the answer leaves (also when
    the call failed or timed out: the write may have happened all the same)."""
    try:
        yield
    finally:
        current_app.extensions["overviews"].changed(org_id)


@api.route("/organizations/<org_id>", "PATCH", ADMIN, "Rename the organization", "organizations",
           body=s.RenameOrganizationRequest, response=s.OrganizationOverviewSchema, errors=("410",))
def rename_organization(org_id, body):
    with changing_overview(org_id):
        return rpc("org", "rename", org_id, body["name"])


@api.route("/organizations/<org_id>/plan", "PUT", SUPERUSER, "Set the plan (platform operators)", "organizations",
           body=s.PlanRequest, response=s.OrganizationOverviewSchema, errors=("410",))
def set_plan(org_id, body):
    plan = dict(body, paid_until=isoformat(body["paid_until"]) if body["paid_until"] else None)
    with changing_overview(org_id):
        return rpc("org", "set_plan", org_id, plan, g.claims["sub"])


@api.route("/organizations/<org_id>", "DELETE", ADMIN,
           "Delete the organization and all its data (owner, or an admin holding the deletion right)",
           "organizations", body=s.DeleteOrganizationRequest, response=s.DeletionAcceptedSchema, status=202,
           errors=("410",), success_headers=("Location",))
def delete_organization(org_id, body):
    """202 with the receipt link (`Location`, `receipt_url`): the deletion revokes the caller's token
    (and may delete their account), so its status must be readable without one; follow it until
    `status` is `deleted`. `confirm_name` must equal the current name (else 422)."""
    # This process refuses the organization at once; the others learn it from the announcement
    # (gateway/deletions.py).
    with changing_overview(org_id):
        status = rpc("membership", "request_org_deletion", org_id, actor(), body["confirm_name"])
    current_app.extensions["gone_organizations"].add(org_id)
    receipt_url = url_for("api.get_get_deletion_by_receipt", receipt=status.pop("receipt"))
    return dict(status, receipt_url=receipt_url), {"Location": receipt_url}


@api.route("/organizations/<org_id>/deletion", "GET", USER, "Deletion progress (requester, owner, superuser)",
           "organizations", response=s.DeletionStatusSchema, errors=("404",), org_rule=False)
def get_deletion(org_id):
    return rpc("org", "get_deletion", org_id, actor())


@api.route("/deletions/<receipt>", "GET", PUBLIC,
           "Deletion progress for whoever holds the receipt link of the deletion's 202 (no token)",
           "organizations", response=s.DeletionStatusSchema, errors=("404",))
def get_deletion_by_receipt(receipt):
    return rpc("org", "get_deletion_by_receipt", receipt)


EXPORT_PARTS = ("org", "membership", "notifications", "usage", "audit")


@api.route("/organizations/<org_id>/export", "GET", ADMIN, "Everything every service holds for the organization",
           "organizations", response=s.ExportSchema, errors=("410",), bulkhead="export")
def export_organization(org_id):
    """Each service's part is gathered first (so a failure is a clean 503), then streamed part by part."""
    parts = [(name, rpc(name, "export", org_id)) for name in EXPORT_PARTS]

    def generate():
        yield f"{{\"organization_id\": {json.dumps(org_id)}, \"exported_at\": {json.dumps(isoformat(utcnow()))}"
        for name, part in parts:
            yield f', {json.dumps(name)}: {json.dumps(part, separators=(",", ":"))}'
        yield "}"
    return Response(generate(), mimetype="application/json", headers={
        "Content-Disposition": f"attachment; filename=\"organization-{org_id}.json\""})
