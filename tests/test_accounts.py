"""Sign-up, login, refresh, logout and /me through the real gateway, services, broker and database."""
import base64
import json

from tests.support import SUPERUSER, assert_error, unique_email, wait_until


def claims_of(token):
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_signup_with_organization_gives_an_org_scoped_owner_token(gateway):
    email = unique_email("Ada")
    account = gateway.signup(organization_name="  Lovelace Lab  ", email=email, name="Ada")
    assert account.data["organization"]["name"] == "Lovelace Lab"
    assert account.data["user"]["email"] == email.lower()
    assert account.data["expires_in"] <= 900
    claims = claims_of(account.token)
    assert claims["org"] == account.org_id and claims["role"] == "admin" and claims["owner"] is True
    assert claims["su"] is False and claims["sub"] == account.user_id
    assert claims["exp"] - claims["iat"] <= 900

    me = gateway.get("/me", account.token)
    assert me.status_code == 200, me.text
    assert me.json()["organization"] == {"id": account.org_id, "name": "Lovelace Lab"}
    assert me.json()["organizations"] == [
        {"id": account.org_id, "name": "Lovelace Lab", "role": "admin", "is_owner": True}]

    overview = gateway.get(f"/organizations/{account.org_id}", account.token).json()
    assert overview["name"] == "Lovelace Lab"
    assert overview["owner"] == {"id": account.user_id, "name": "Ada", "email": email.lower()}
    assert overview["plan"] == {"name": "custom", "included_users": None, "included_storage_bytes": None,
                                "paid_until": None}
    assert overview["members"] == {"count": 1, "included": None, "exceeded": False}
    assert overview["storage"] == {"used_bytes": 0, "included_bytes": None, "exceeded": False}
    assert overview["credits"] == {"balance": 0} and overview["status"] == "active"


def test_signup_without_organization_gives_a_token_for_no_organization(gateway):
    account = gateway.signup(organization_name=None)
    assert account.data["organization"] is None
    assert claims_of(account.token)["org"] is None
    me = gateway.get("/me", account.token).json()
    assert me["organization"] is None and me["organizations"] == [] and me["role"] is None


def test_rename_reaches_the_overview_and_the_membership_copy(gateway, owner):
    renamed = gateway.patch(f"/organizations/{owner.org_id}", {"name": " Renamed Lab "}, owner.token)
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["name"] == "Renamed Lab"
    assert gateway.get(f"/organizations/{owner.org_id}", owner.token).json()["name"] == "Renamed Lab"
    wait_until(lambda: gateway.get("/me", owner.token).json()["organization"]["name"] == "Renamed Lab",
               what="organization_renamed to reach the membership service")


def test_duplicate_email_is_a_conflict_case_insensitively(gateway):
    email = unique_email()
    gateway.signup(email=email)
    again = gateway.post("/auth/signup", {"email": email.upper(), "password": "another password",
                                          "name": "Twin"})
    assert_error(again, 409, "email_taken")


def test_login_scopes_to_last_used_org_and_hides_which_part_was_wrong(gateway, owner):
    ok = gateway.post("/auth/login", {"email": owner.email.upper(), "password": owner.password})
    assert ok.status_code == 200, ok.text
    assert claims_of(ok.json()["access_token"])["org"] == owner.org_id

    wrong_password = gateway.post("/auth/login", {"email": owner.email, "password": "not the password"})
    unknown_email = gateway.post("/auth/login", {"email": unique_email(), "password": "not the password"})
    assert_error(wrong_password, 401, "invalid_credentials")
    assert_error(unknown_email, 401, "invalid_credentials")
    assert wrong_password.json() == unknown_email.json()

    other = gateway.signup()
    not_member = gateway.post("/auth/login", {"email": owner.email, "password": owner.password,
                                              "organization_id": other.org_id})
    assert_error(not_member, 403, "not_a_member")


def test_refresh_rotates_and_a_reused_refresh_token_revokes_the_session(gateway, owner):
    first = gateway.post("/auth/refresh", {"refresh_token": owner.refresh_token})
    assert first.status_code == 200, first.text
    rotated = first.json()["refresh_token"]
    assert rotated != owner.refresh_token
    assert claims_of(first.json()["access_token"])["sid"] == claims_of(owner.token)["sid"]

    # a second tab presenting the same token right away gets the same new pair (grace window)
    again = gateway.post("/auth/refresh", {"refresh_token": owner.refresh_token})
    assert again.status_code == 200 and again.json()["refresh_token"] == rotated, again.text
    second = gateway.post("/auth/refresh", {"refresh_token": rotated})
    assert second.status_code == 200, second.text
    # the first token is now two rotations old: its reuse is theft, whatever the window
    reuse = gateway.post("/auth/refresh", {"refresh_token": owner.refresh_token})
    assert_error(reuse, 401, "invalid_token")
    # the reuse revoked the whole session: the newest token is dead too
    assert_error(gateway.post("/auth/refresh", {"refresh_token": second.json()["refresh_token"]}), 401,
                 "invalid_token")


def test_logout_ends_the_refresh_token(gateway, owner):
    out = gateway.post("/auth/logout", token=owner.token)
    assert out.status_code == 200, out.text
    assert_error(gateway.post("/auth/refresh", {"refresh_token": owner.refresh_token}), 401, "invalid_token")


def test_superuser_from_configuration_can_log_in(gateway):
    response = gateway.post("/auth/login", SUPERUSER)
    assert response.status_code == 200, response.text
    claims = claims_of(response.json()["access_token"])
    assert claims["su"] is True and claims["org"] is None
    assert response.json()["user"]["is_superuser"] is True
