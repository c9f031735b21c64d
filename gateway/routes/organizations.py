"""Organizations: create, list, overview, rename, plan."""
from flask import g

from common.events import isoformat
from gateway import schemas as s
from gateway.api import ADMIN, MEMBER, SUPERUSER, USER
from gateway.routes.common import api, rpc


@api.route("/organizations", "POST", USER, "Create an organization; the caller becomes its owner",
           "organizations", body=s.CreateOrganizationRequest, response=s.OrganizationOverviewSchema, status=201)
def create_organization(body):
    return rpc("membership", "create_organization", g.claims["sub"], body["name"])


@api.route("/organizations", "GET", USER, "The caller's organizations", "organizations",
           response=s.OrganizationListSchema)
def list_organizations():
    return {"items": rpc("membership", "list_organizations", g.claims["sub"])}


@api.route("/organizations/<org_id>", "GET", MEMBER, "Organization overview", "organizations",
           response=s.OrganizationOverviewSchema, errors=("410",))
def get_organization(org_id):
    return rpc("org", "get_overview", org_id)


@api.route("/organizations/<org_id>", "PATCH", ADMIN, "Rename the organization", "organizations",
           body=s.RenameOrganizationRequest, response=s.OrganizationOverviewSchema, errors=("410",))
def rename_organization(org_id, body):
    return rpc("org", "rename", org_id, body["name"])


@api.route("/organizations/<org_id>/plan", "PUT", SUPERUSER, "Set the plan (platform operators)", "organizations",
           body=s.PlanRequest, response=s.OrganizationOverviewSchema, errors=("410",))
def set_plan(org_id, body):
    plan = dict(body, paid_until=isoformat(body["paid_until"]) if body["paid_until"] else None)
    return rpc("org", "set_plan", org_id, plan, g.claims["sub"])
