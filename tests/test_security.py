"""Security basics: no secret in any log, an explicit CORS policy, and key rotation at the gateway.

(Request size limits and refresh-token reuse detection are covered in test_errors / test_accounts.)
"""
import os
import time
import uuid

import jwt
import pytest

from common.tokens import key_id
from services.membership.keys import generate, load_private_key, public_pem, write_public
from tests.support import assert_error, invite, side_gateway, unique_email, wait_until
from tests.tokens import forge, stranger_key

ALLOWED_ORIGIN = "https://app.example.test"  # the test instance's CORS_ALLOWED_ORIGINS


# -- (a) secrets never logged ------------------------------------------------------------------

def log_files(directory):
    for folder, _, names in os.walk(directory):
        for name in names:
            yield os.path.join(folder, name)


def secret_forms(secret):
    """The secret and, for a JWT, its signature alone (a truncated log line still leaks that)."""
    forms = [secret]
    if secret.count(".") == 2:
        forms.append(secret.rsplit(".", 1)[1])
    return forms


def test_passwords_and_tokens_never_reach_any_log(gateway, tap, test_stack):
    gateway_log = os.path.join(test_stack.log_dir, "gateway.log")
    with open(gateway_log, "rb") as handle:
        start = len(handle.read())
    secrets = {}

    def password(label):
        secrets[label] = f"{label}-{uuid.uuid4().hex}"
        return secrets[label]

    def keep(label, body):
        for field in ("access_token", "refresh_token"):
            if field in body:
                secrets[f"{label} {field}"] = body[field]

    owner = gateway.signup(organization_name="Log Lab", password=password("owner password"))
    keep("signup", owner.data)
    assert_error(gateway.post("/auth/login", {"email": owner.email, "password": password("wrong password")}), 401)
    login = gateway.post("/auth/login", {"email": owner.email, "password": owner.password})
    assert login.status_code == 200, login.text
    keep("login", login.json())
    refreshed = gateway.post("/auth/refresh", {"refresh_token": login.json()["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.text
    keep("refresh", refreshed.json())

    # an invite previewed and used for sign-up; another accepted by an existing account
    newcomer = unique_email("newcomer")
    secrets["invite token 1"], _ = invite(gateway, tap, owner, newcomer)
    assert gateway.get(f'/invites/{secrets["invite token 1"]}').status_code == 200
    joined = gateway.post("/auth/signup", {"email": newcomer, "password": password("newcomer password"),
                                           "name": "Newcomer", "invite_token": secrets["invite token 1"]})
    assert joined.status_code == 201, joined.text
    keep("invite signup", joined.json())
    existing = gateway.signup(organization_name=None, password=password("existing password"))
    keep("existing", existing.data)
    secrets["invite token 2"], _ = invite(gateway, tap, owner, existing.email)
    accepted = gateway.post(f'/invites/{secrets["invite token 2"]}/accept', token=existing.token)
    assert accepted.status_code == 200, accepted.text
    keep("accept", accepted.json())
    changed = gateway.post("/auth/password", {"current_password": owner.password,
                                              "new_password": password("new owner password")},
                           refreshed.json()["access_token"])
    assert changed.status_code == 200, changed.text
    keep("password change", changed.json())
    # a deletion receipt: a bearer link in the URL path, like an invite token
    doomed = gateway.signup(organization_name="Receipt Log Lab")
    deletion = gateway.delete(f"/organizations/{doomed.org_id}", {"confirm_name": "Receipt Log Lab"}, doomed.token)
    assert deletion.status_code == 202, deletion.text
    secrets["deletion receipt"] = deletion.json()["receipt_url"].rsplit("/", 1)[1]
    assert gateway.get(gateway.base_url + deletion.json()["receipt_url"]).status_code == 200

    def appended():
        with open(gateway_log, "rb") as handle:
            return handle.read()[start:].decode("utf-8", "replace")
    # everything above is written once the access log has both invite requests (preview, accept)
    wait_until(lambda: appended().count(" /api/v1/invites/") >= 2 and " /api/v1/deletions/" in appended(),
               timeout=5, what="the invite and receipt requests in the gateway's access log")
    assert "/api/v1/auth/login" in appended()

    found = []
    for path in log_files(test_stack.log_dir):
        with open(path, "rb") as handle:
            text = handle.read().decode("utf-8", "replace")
        for label, secret in secrets.items():
            if any(form in text for form in secret_forms(secret)):
                found.append((os.path.relpath(path, test_stack.log_dir), label))
    assert not found, found
    assert appended().count(" /api/v1/invites/[redacted]") >= 2  # logged, without the token
    assert " /api/v1/deletions/[redacted]" in appended()  # logged, without the receipt


# -- (b) CORS ----------------------------------------------------------------------------------

def test_cors_allows_only_the_configured_origin(gateway, owner):
    path = f"/organizations/{owner.org_id}"
    allowed = gateway.get(path, owner.token, headers={"Origin": ALLOWED_ORIGIN})
    assert allowed.status_code == 200
    assert allowed.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    assert "Origin" in allowed.headers["Vary"]
    assert "Retry-After" in allowed.headers["Access-Control-Expose-Headers"]
    assert "Access-Control-Allow-Credentials" not in allowed.headers  # bearer tokens, no cookies
    # an error answer is readable by the allowed browser app too
    denied = gateway.get(path, headers={"Origin": ALLOWED_ORIGIN})
    assert_error(denied, 401)
    assert denied.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    for origin in ("https://evil.example.test", "null", "http://app.example.test",
                   "https://app.example.test.evil.test", "https://app.example.test:8443"):
        response = gateway.get(path, owner.token, headers={"Origin": origin})
        assert "Access-Control-Allow-Origin" not in response.headers, origin
        assert "Origin" in response.headers["Vary"]
    assert "Access-Control-Allow-Origin" not in gateway.get(path, owner.token).headers


def preflight(gateway, path, origin, method):
    return gateway.request("OPTIONS", path, headers={
        "Origin": origin, "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, content-type"})


def test_cors_preflight(gateway, owner):
    path = f"/organizations/{owner.org_id}/members/{owner.user_id}"
    response = preflight(gateway, path, ALLOWED_ORIGIN, "PATCH")
    assert response.status_code in (200, 204), response.text
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    methods = {m.strip() for m in response.headers["Access-Control-Allow-Methods"].split(",")}
    assert {"PATCH", "DELETE"} <= methods and "POST" not in methods  # exactly this route's methods
    headers = {h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type"} <= headers
    assert int(response.headers["Access-Control-Max-Age"]) > 0
    # the preflight ran no operation: the owner is still a member
    assert gateway.get(f"/organizations/{owner.org_id}/members", owner.token).json()["items"]

    refused = preflight(gateway, path, "https://evil.example.test", "PATCH")
    for header in ("Access-Control-Allow-Origin", "Access-Control-Allow-Methods", "Access-Control-Allow-Headers"):
        assert header not in refused.headers, header


# -- (c) key rotation ------------------------------------------------------------------------

@pytest.fixture
def rotation_gateway(test_stack, tmp_path):
    """A second gateway that knows the current key and the next one (the middle of a rotation)."""
    new_private, new_public = str(tmp_path / "next-private.pem"), str(tmp_path / "next.pub.pem")
    generate(new_private)
    write_public(new_private, new_public)
    with side_gateway(test_stack, "rotation",
                      JWT_PUBLIC_KEY_FILES=f"{test_stack.public_key_file},{new_public}") as rotation:
        yield rotation, load_private_key(new_private)


def test_during_a_key_rotation_both_keys_are_accepted_and_no_other(gateway, test_stack, owner, rotation_gateway):
    rotation, next_key = rotation_gateway
    next_kid = key_id(public_pem(next_key))
    current_kid = jwt.get_unverified_header(owner.token)["kid"]
    assert next_kid != current_kid

    # a token of the current key (issued by the membership service)
    assert rotation.get("/me", owner.token).status_code == 200
    # a token for the same session signed with the next key: the rotating gateway accepts it,
    # a gateway that was not told about the next key refuses it
    signed_with_next = forge(test_stack, key=next_key, kid=next_kid, session_of=owner)
    me = rotation.get("/me", signed_with_next)
    assert me.status_code == 200, me.text
    assert me.json()["user"]["id"] == owner.user_id
    assert_error(gateway.get("/me", signed_with_next), 401, "invalid_token")
    # any third key is refused, also when it claims one of the known key ids
    stranger, stranger_kid = stranger_key()
    for kid in (stranger_kid, current_kid, next_kid):
        forged = forge(test_stack, key=stranger, kid=kid, session_of=owner)
        assert_error(rotation.get("/me", forged), 401, "invalid_token")


def test_a_remembered_token_still_expires_and_still_gets_revoked(gateway, test_stack, owner):
    """The gateway skips the signature check for a token it has verified before -- nothing else."""
    token = forge(test_stack, session_of=owner, exp=int(time.time()) + 2)
    assert gateway.get("/me", token).status_code == 200  # verified and remembered by this worker
    assert gateway.get("/me", token).status_code == 200
    for _ in range(4):  # every worker has seen it
        assert gateway.get("/me", token).status_code == 200
    wait_until(lambda: gateway.get("/me", token).status_code == 401, timeout=5, what="the token to expire")
    for _ in range(8):  # and every worker refuses it now
        assert_error(gateway.get("/me", token), 401, "token_expired")

    fresh = forge(test_stack, session_of=owner)
    for _ in range(4):
        assert gateway.get("/me", fresh).status_code == 200
    assert gateway.post("/auth/logout", token=owner.token).status_code == 200  # the session both tokens share
    wait_until(lambda: gateway.get("/me", fresh).status_code == 401, timeout=1, what="the remembered token revoked")
    for _ in range(8):
        assert_error(gateway.get("/me", fresh), 401, "token_revoked")


# -- (d) issue 12, item 6: canonical token encodings, secrets in query strings, encoded words ------

def _segments(token):
    return token.split(".")


def _non_canonical_variants(token):
    """The same token bytes spelt differently: padding, the standard alphabet, set trailing bits."""
    header, payload, signature = _segments(token)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(signature[-1])
    # 64 signature bytes = 86 characters, the last one carrying 2 bits: its low 4 bits must be zero
    loose_bits = signature[:-1] + alphabet[last | 0b0001]
    variants = {
        "signature ==": token + "==",
        "signature =": token + "=",
        "header padding": f"{header}=.{payload}.{signature}",
        "payload padding": f"{header}.{payload}==.{signature}",
        "non-zero trailing bits": f"{header}.{payload}.{loose_bits}",
        "whitespace inside": f"{header}.{payload}.{signature[:40]} {signature[40:]}",
    }
    standard = token.replace("-", "+").replace("_", "/")
    if standard != token:
        variants["standard alphabet"] = standard
    return variants


def test_tokens_with_non_canonical_base64url_are_refused(gateway, test_stack, owner):
    # make sure the standard-alphabet variant exists: forge tokens until one has '-' or '_'
    token = owner.token
    for _ in range(50):
        if "-" in token or "_" in token:
            break
        token = forge(test_stack, session_of=owner)
    assert gateway.get("/me", token).status_code == 200
    for label, variant in _non_canonical_variants(token).items():
        assert variant != token
        response = gateway.get("/me", variant)
        assert_error(response, 401)
        assert response.json()["error"]["code"] in ("invalid_token", "unauthorized"), (label, response.text)
    assert gateway.get("/me", token).status_code == 200  # the canonical spelling still works


def test_secrets_in_query_parameters_never_reach_the_access_log(gateway, test_stack, owner):
    gateway_log = os.path.join(test_stack.log_dir, "gateway.log")
    with open(gateway_log, "rb") as handle:
        start = len(handle.read())
    marker = uuid.uuid4().hex
    secrets = {name: f"{name}-{uuid.uuid4().hex}" for name in
               ("token", "refresh_token", "receipt", "Access_Token", "invite_token", "password")}
    query = "&".join(f"{name}={value}" for name, value in secrets.items())
    gateway.get(f"/me?access_token={owner.token}&marker={marker}", owner.token)
    gateway.get(f"/organizations/{owner.org_id}?{query}&marker={marker}", owner.token)
    gateway.get(f"/no/such/route?access%5Ftoken={owner.token}&marker={marker}")
    gateway.get(f'/me?marker={marker}&refresh_token={secrets["refresh_token"]}#frag', owner.token)

    def appended():
        with open(gateway_log, "rb") as handle:
            return handle.read()[start:].decode("utf-8", "replace")
    wait_until(lambda: appended().count(marker) >= 4, timeout=10, what="the requests in the access log")
    text = appended()
    leaked = [label for label, secret in dict(secrets, access_token=owner.token).items()
              if any(form in text for form in secret_forms(secret))]
    assert not leaked, leaked
    assert "access_token=[redacted]" in text and f"marker={marker}" in text  # the rest of the line stays


ENCODED_WORDS = "=?UTF-8?Q?=F0=9F=94=92_Security_Team?= =?utf-8?b?UGF5IG5vdw==?="


def test_encoded_words_in_names_reach_subjects_as_literal_text(gateway, tap, test_stack):
    """Names are shown as typed: a name spelling RFC 2047 encoded words must not be decoded by mail clients."""
    from tests.support import Mailbox, join

    mailbox = Mailbox(test_stack.mail_dir)
    owner = gateway.signup(organization_name="Lab " + ENCODED_WORDS, name="Owner")
    invitee = unique_email("ew")
    invite(gateway, tap, owner, invitee)
    [invitation] = mailbox.wait(invitee, timeout=30)
    assert invitation.subject == "You are invited to join Lab " + ENCODED_WORDS, invitation.subject
    join(gateway, tap, owner, "member", name=ENCODED_WORDS)
    [joined] = mailbox.wait(owner.email, contains="joined", timeout=30)
    assert joined.subject == f"{ENCODED_WORDS} joined Lab {ENCODED_WORDS}", joined.subject
    for mail in (invitation, joined):
        assert "Pay now" not in mail.subject and "\U0001f512" not in mail.subject
