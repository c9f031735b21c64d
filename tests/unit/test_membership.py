"""Membership's domain rules on an in-memory store: sign-up, sessions, roles, seats, invites."""
import pytest

from common.addresses import normalize_address
from common.errors import DomainError
from common.events import utcnow
from services.membership import accounts, invites, members, ratelimit, revocation, sessions, validation
from tests.unit.conftest import PASSWORD
from tests.unit.refusals import code

# -- validation and sign-up --------------------------------------------------------------------

@pytest.mark.parametrize("address", ["x@ex..ample.com", "x@.example.com", "a b@example.org", "x@example",
                                     "two@example.org,three@example.org", "x@-example.com"])
def test_an_address_the_mailer_refuses_is_refused_at_sign_up(address):
    assert normalize_address(address) is None
    assert code(validation.normalize_email, address) == "validation_failed"


def test_addresses_are_stored_trimmed_and_lower_cased():
    assert validation.normalize_email("  Rita@Example.ORG ") == "rita@example.org"


def test_sign_up_with_an_organization_makes_the_owner_its_first_admin_seat(world):
    org = world.store.organization(world.org_id)
    assert (org["owner_user_id"], org["member_count"], org["status"]) == (world.owner["sub"], 1, "active")
    assert world.store.membership(world.org_id, world.owner["sub"])["role"] == "admin"
    assert "member_joined" in world.store.outbox.types()


def test_a_taken_email_is_refused_before_any_organization_is_recorded(world):
    before = len(world.store.orgs)
    assert code(world.signup, "OWNER@example.org") == "email_taken"
    assert len(world.store.orgs) == before + 0


def test_password_length_is_checked():
    assert code(validation.check_password, "short") == "validation_failed"
    validation.check_password("x" * validation.MIN_PASSWORD)


# -- sessions ----------------------------------------------------------------------------------

def test_login_answers_the_same_for_unknown_email_and_wrong_password(world, security):
    for email, password in (("nobody@example.org", PASSWORD), ("owner@example.org", "wrong password!")):
        assert code(sessions.login, world.store, security, world.settings, email, password) == "invalid_credentials"


def test_login_opens_a_session_into_the_last_used_organization(world, security):
    answer = sessions.login(world.store, security, world.settings, "owner@example.org", PASSWORD)
    assert answer["organization"] == {"id": world.org_id, "name": "Lab", "role": "admin", "is_owner": True}


def test_refresh_rotates_and_a_reused_token_after_the_grace_revokes_the_session(world, security):
    first = sessions.login(world.store, security, world.settings, "owner@example.org", PASSWORD)
    second = sessions.refresh(world.store, security, first["refresh_token"])
    assert second["refresh_token"] != first["refresh_token"]
    # within the grace window the old token answers the same new pair (two tabs refreshing at once)
    assert sessions.refresh(world.store, security, first["refresh_token"])["refresh_token"] == second["refresh_token"]
    session = next(s for s in world.store.sessions.values() if s["previous_hashes"])
    world.store.sessions[session["_id"]]["grace"]["until"] = utcnow()  # the window is over
    assert code(sessions.refresh, world.store, security, first["refresh_token"]) == "invalid_token"
    assert world.store.session(session["_id"])["revoked_at"] is not None
    assert code(sessions.refresh, world.store, security, second["refresh_token"]) == "invalid_token"


def test_no_session_opens_into_an_organization_being_deleted(world, security):
    world.store.set_organization_status(world.org_id, "deleting")
    assert code(sessions.login, world.store, security, world.settings, "owner@example.org", PASSWORD,
                world.org_id) == "organization_gone"


def test_revocation_cut_offs_always_grow():
    far_future = revocation.now_seconds() + 1000
    assert revocation.next_cutoff(far_future) == round(far_future + 0.001, 3)
    assert revocation.next_cutoff(None) >= revocation.now_seconds() - 1


# -- rate limits -------------------------------------------------------------------------------

def test_a_refused_attempt_costs_the_refusing_key_only_and_a_refund_gives_it_back(members_store):
    for _ in range(2):
        ratelimit.rate_limit(members_store, [("addr:a", 2), ("email:e", 5)], 60, "slow down")
    with pytest.raises(DomainError) as refused:
        ratelimit.rate_limit(members_store, [("addr:a", 2), ("email:e", 5)], 60, "slow down")
    assert refused.value.code == "rate_limited" and refused.value.details["retry_after"] >= 1
    assert sorted(members_store.attempts.values()) == [2, 3]  # the email was not counted the third time
    counted = ratelimit.rate_limit(members_store, [("email:e", 5)], 60, "slow down")
    counted.refund()
    assert sorted(members_store.attempts.values()) == [2, 3]


# -- roles, seats, ownership -------------------------------------------------------------------

def test_only_admins_change_members_and_the_owner_cannot_be_demoted(world):
    member = world.join("mia@example.org")
    admin = world.join("ada@example.org", "admin")
    assert code(members.change_member, world.store, world.org_id, member, admin["sub"], role="member") == "forbidden"
    assert code(members.change_member, world.store, world.org_id, admin, world.owner["sub"],
                role="member") == "owner_protected"
    changed = members.change_member(world.store, world.org_id, admin, member["sub"], role="dataset_manager")
    assert changed["role"] == "dataset_manager"
    assert "access_revoked" in world.store.outbox.types()  # the member's old tokens die


def test_the_deletion_right_belongs_to_admins_granted_by_the_owner(world):
    member = world.join("mia@example.org")
    admin = world.join("ada@example.org", "admin")
    assert code(members.change_member, world.store, world.org_id, admin, admin["sub"],
                can_delete_organization=True) == "forbidden"
    assert code(members.change_member, world.store, world.org_id, world.owner, member["sub"],
                can_delete_organization=True) == "conflict"
    granted = members.change_member(world.store, world.org_id, world.owner, admin["sub"], can_delete_organization=True)
    assert granted["can_delete_organization"] is True
    demoted = members.change_member(world.store, world.org_id, world.owner, admin["sub"], role="member")
    assert demoted["can_delete_organization"] is False  # a later promotion does not bring it back


def test_the_last_seat_goes_once_and_a_removal_gives_it_back(world):
    world.limit = 2
    member = world.join("mia@example.org")
    assert code(world.join, "late@example.org") == "user_limit_reached"
    assert world.store.account_by_email("late@example.org") is None  # no account left behind
    assert world.store.organization(world.org_id)["member_count"] == 2
    members.remove_member(world.store, world.org_id, world.owner, member["sub"])
    assert world.store.organization(world.org_id)["member_count"] == 1
    world.join("late@example.org")


def test_the_owner_can_neither_leave_nor_be_removed(world):
    admin = world.join("ada@example.org", "admin")
    for actor in (world.owner, admin):
        assert code(members.remove_member, world.store, world.org_id, actor, world.owner["sub"]) == "owner_protected"


def test_ownership_moves_only_to_another_admin(world):
    member = world.join("mia@example.org")
    admin = world.join("ada@example.org", "admin")
    assert code(members.transfer_ownership, world.store, world.org_id, world.owner, member["sub"]) == "conflict"
    assert code(members.transfer_ownership, world.store, world.org_id, admin, admin["sub"]) == "forbidden"
    moved = members.transfer_ownership(world.store, world.org_id, world.owner, admin["sub"])
    assert moved == {"owner_user_id": admin["sub"], "previous_owner_user_id": world.owner["sub"]}


def test_a_member_list_follows_join_order_and_pages(world):
    for name in ("b", "c", "d"):
        world.join(f"{name}@example.org")
    first = members.list_members(world.store, world.org_id, limit=2)
    second = members.list_members(world.store, world.org_id, limit=2, cursor=first["next_cursor"])
    emails = [m["email"] for m in first["items"] + second["items"]]
    assert emails == ["owner@example.org", "b@example.org", "c@example.org", "d@example.org"]
    assert second["next_cursor"] is None


# -- invites -----------------------------------------------------------------------------------

def test_an_invite_batch_is_normalised_and_skips_members(world):
    answer = world.invite(world.owner, ["New@Example.org", "new@example.org", "owner@example.org"])
    assert [i["email"] for i in answer["items"]] == ["new@example.org"]
    assert answer["skipped"] == [{"email": "owner@example.org", "reason": "already_member"}]


def test_a_repeated_invite_keeps_its_link_and_another_role_replaces_it(world, invite_tokens):
    first = world.invite(world.owner, ["new@example.org"])["items"][0]
    assert world.invite(world.owner, ["new@example.org"])["items"][0]["id"] == first["id"]
    replaced = world.invite(world.owner, ["new@example.org"], "admin")["items"][0]
    assert replaced["id"] != first["id"]
    assert world.store.invites[first["id"]]["status"] == "revoked"
    assert code(invites.preview, world.store, invite_tokens.token(first["id"])) == "not_found"


def test_invites_carry_their_link_only_when_published(world, invite_tokens):
    world.store.outbox.enrichers["invite_created"] = invite_tokens.with_accept_url
    item = world.invite(world.owner, ["new@example.org"])["items"][0]
    assert "accept_url" not in repr(world.store.invites[item["id"]])
    [created] = [e for e in world.store.outbox.published if e["type"] == "invite_created"]
    assert created["body"]["accept_url"] == invite_tokens.accept_url(item["id"])


def test_an_invite_is_for_its_address_and_used_once(world, security, invite_tokens):
    item = world.invite(world.owner, ["new@example.org"])["items"][0]
    token = invite_tokens.token(item["id"])
    other = world.signup("other@example.org")
    assert code(invites.accept, world.store, security, lambda org_id: None, token, other["user"]["id"]) == "forbidden"
    world.join("second@example.org")
    invitee = world.signup("new@example.org")
    invites.accept(world.store, security, lambda org_id: None, token, invitee["user"]["id"])
    assert code(invites.accept, world.store, security, lambda org_id: None, token, invitee["user"]["id"]) == "not_found"


def test_members_cannot_invite(world):
    member = world.join("mia@example.org")
    assert code(world.invite, member, ["x@example.org"]) == "forbidden"


# -- accounts ----------------------------------------------------------------------------------

def test_an_owner_cannot_delete_their_account_a_member_can(world, security):
    assert code(accounts.delete_account, world.store, security, world.owner["sub"], PASSWORD,
                world.settings) == "conflict"
    member = world.join("mia@example.org")
    answer = accounts.delete_account(world.store, security, member["sub"], PASSWORD, world.settings)
    assert answer["organizations_left"] == [world.org_id]
    assert world.store.account(member["sub"]) is None
    assert world.store.organization(world.org_id)["member_count"] == 1
