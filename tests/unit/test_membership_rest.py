"""The rest of membership's domain modules on an in-memory store: idempotency keys, deletion requests."""
import pytest

from common.errors import DomainError
from services.membership import deletion, idempotency


def test_a_key_hands_back_the_first_requests_ids_and_refuses_other_parameters(members_store, membership_settings):
    ids, replayed = idempotency.claim(members_store, membership_settings, "signup:a", "k1", {"n": 1}, {"id": "first"})
    assert (ids, replayed) == ({"id": "first"}, False)
    assert idempotency.claim(members_store, membership_settings, "signup:a", "k1", {"n": 1}, {"id": "x"}) == (
        {"id": "first"}, True)
    with pytest.raises(DomainError) as refused:
        idempotency.claim(members_store, membership_settings, "signup:a", "k1", {"n": 2}, {"id": "x"})
    assert refused.value.code == "conflict"
    no_key = idempotency.claim(members_store, membership_settings, "signup:a", None, {}, {"id": "y"})
    assert no_key == ({"id": "y"}, False)


def test_only_the_owner_or_a_holder_of_the_right_may_request_deletion(world):
    member = world.join("mia@example.org")
    asked = []

    def org_service(org_id, requested_by, confirm_name):
        asked.append(requested_by)
        return {"status": "deleting"}
    with pytest.raises(DomainError) as refused:
        deletion.request(world.store, org_service, world.org_id, member, "Lab")
    assert refused.value.code == "forbidden" and asked == []
    deletion.request(world.store, org_service, world.org_id, world.owner, "Lab")
    assert world.store.organization(world.org_id)["status"] == "deleting"
    assert "access_revoked" in world.store.outbox.types()  # every token of it dies at once


def test_the_membership_purge_voids_tokens_before_the_protocol_deletes(world):
    world.join("mia@example.org")
    deletion.purge(world.store, {"organization_id": world.org_id})
    assert world.store.was_purged(world.org_id) and world.store.membership(world.org_id, world.owner["sub"]) is None
    assert world.store.outbox.types()[-2:] == ["access_revoked", "organization_purged"]
