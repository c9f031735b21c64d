"""Members: list, roles, removal, ownership."""
from gateway import schemas as s
from gateway.api import ADMIN, MEMBER, OWNER
from gateway.routes.common import actor, api, rpc


@api.route("/organizations/<org_id>/members", "GET", MEMBER, "Members, cursor-paginated, searchable", "members",
           query=s.MemberQuery, response=s.MemberPageSchema, errors=("410",))
def list_members(org_id, query):
    return rpc("membership", "list_members", org_id, query["limit"], query["cursor"], query["q"])


@api.route("/organizations/<org_id>/members/<user_id>", "PATCH", ADMIN,
           "Change a member's role or deletion right (the right: owner only)", "members",
           body=s.MemberUpdateRequest, response=s.MemberSchema, errors=("409", "410"))
def change_member(org_id, user_id, body):
    return rpc("membership", "change_member", org_id, actor(), user_id, body.get("role"),
               body.get("can_delete_organization"))


@api.route("/organizations/<org_id>/members/<user_id>", "DELETE", MEMBER,
           "Remove a member (admin) or leave (the member itself)", "members", response=s.RemovedSchema,
           errors=("409", "410"))
def remove_member(org_id, user_id):
    return rpc("membership", "remove_member", org_id, actor(), user_id)


@api.route("/organizations/<org_id>/ownership", "POST", OWNER, "Transfer ownership to another admin", "members",
           body=s.OwnershipRequest, response=s.OwnershipSchema, errors=("409", "410"))
def transfer_ownership(org_id, body):
    return rpc("membership", "transfer_ownership", org_id, actor(), body["user_id"])
