"""Token verification and the organization/role rules at the gateway."""
import base64
import json
import time

import jwt
import pytest

from tests.support import assert_error, superuser_token
from tests.tokens import forge, real_key, stranger_key


def b64(data):
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def test_token_of_another_organization_is_refused(gateway, owner):
    other = gateway.signup()
    for method, body in (("GET", None), ("PATCH", {"name": "Hijacked"})):
        response = gateway.request(method, f"/organizations/{owner.org_id}", other.token, json=body)
        assert_error(response, 403, "wrong_organization")
    assert gateway.get(f"/organizations/{owner.org_id}", owner.token).json()["name"] != "Hijacked"


def test_missing_and_malformed_authorization_is_401(gateway, owner):
    path = f"/organizations/{owner.org_id}"
    assert_error(gateway.get(path), 401, "unauthorized")
    assert_error(gateway.get(path, headers={"Authorization": "Basic abc"}), 401, "unauthorized")
    assert_error(gateway.get(path, token="not-a-jwt"), 401, "invalid_token")
    assert_error(gateway.get("/me"), 401, "unauthorized")


def test_expired_token_is_401(gateway, test_stack, owner):
    token = forge(test_stack, session_of=owner, iat=int(time.time()) - 1000, exp=int(time.time()) - 10)
    assert_error(gateway.get(f"/organizations/{owner.org_id}", token), 401, "token_expired")


@pytest.mark.parametrize("attack", ["alg_none", "other_key_same_kid", "unknown_kid", "hs256_with_public_key",
                                    "tampered_claims", "wrong_issuer", "missing_sid"])
def test_forged_tokens_are_401(gateway, test_stack, owner, attack):
    claims = dict(sub=owner.user_id, org=owner.org_id, role="admin", owner=True)
    _, real_kid = real_key(test_stack)
    if attack == "alg_none":
        header = {"alg": "none", "typ": "JWT", "kid": real_kid}
        token = f'{b64(header)}.{b64(dict(jwt.decode(owner.token, options={"verify_signature": False})))}.'
    elif attack == "other_key_same_kid":
        key, _ = stranger_key()
        token = forge(test_stack, key=key, kid=real_kid, **claims)
    elif attack == "unknown_kid":
        key, kid = stranger_key()
        token = forge(test_stack, key=key, kid=kid, **claims)
    elif attack == "hs256_with_public_key":
        from services.membership.keys import load_private_key, public_pem
        public = public_pem(load_private_key(test_stack.key_file))
        header = {"alg": "HS256", "typ": "JWT", "kid": real_kid}
        import hashlib
        import hmac
        body = dict(claims, iss="orgplatform", sid="x", jti="y", iat=int(time.time()), exp=int(time.time()) + 60)
        signing_input = f"{b64(header)}.{b64(body)}"
        signature = base64.urlsafe_b64encode(hmac.new(public.encode(), signing_input.encode(),
                                                      hashlib.sha256).digest()).decode().rstrip("=")
        token = signing_input + "." + signature
    elif attack == "tampered_claims":
        head, payload, signature = owner.token.split(".")
        data = jwt.decode(owner.token, options={"verify_signature": False})
        data["su"] = True
        token = f"{head}.{b64(data)}.{signature}"
    elif attack == "wrong_issuer":
        token = forge(test_stack, iss="someone-else", **claims)
    else:
        token = forge(test_stack, **claims)
        data = jwt.decode(token, options={"verify_signature": False})
        data.pop("sid")
        key, kid = real_key(test_stack)
        token = jwt.encode(data, key, algorithm="EdDSA", headers={"kid": kid})
    response = gateway.get(f"/organizations/{owner.org_id}", token)
    assert_error(response, 401, "invalid_token")


@pytest.mark.parametrize("role,expected", [("member", 403), ("dataset_manager", 403), ("admin", 200)])
def test_rename_needs_admin(gateway, test_stack, owner, role, expected):
    token = forge(test_stack, session_of=owner, role=role)
    response = gateway.patch(f"/organizations/{owner.org_id}", {"name": f"By {role}"}, token)
    if expected == 200:
        assert response.status_code == 200, response.text
    else:
        assert_error(response, expected, "forbidden")
    # every role may read the overview
    assert gateway.get(f"/organizations/{owner.org_id}", token).status_code == 200


def test_superuser_token_may_read_any_organization(gateway, owner):
    response = gateway.get(f"/organizations/{owner.org_id}", superuser_token(gateway))
    assert response.status_code == 200, response.text


def test_unknown_organization_is_404_for_superuser(gateway):
    assert_error(gateway.get("/organizations/00000000-0000-0000-0000-000000000000", superuser_token(gateway)),
                 404, "not_found")
