"""Bad input always gets the contract's error shape with a 4xx; never a 500 or a query operator."""
import pytest

from gateway.app import create_app
from tests.support import assert_error, superuser_token, unique_email


def test_malformed_json_is_400(gateway):
    response = gateway.request("POST", "/auth/signup", data=b'{"email": ', headers={"Content-Type": "application/json"})
    assert_error(response, 400, "invalid_json")


def test_non_object_body_is_400(gateway):
    assert_error(gateway.post("/auth/login", ["a", "b"]), 400, "malformed_request")


def test_invalid_fields_are_422_with_per_field_details(gateway):
    response = gateway.post("/auth/signup", {"email": "not-an-email", "password": "short", "name": ""})
    error = assert_error(response, 422, "validation_failed")
    assert set(error["details"]) == {"email", "password", "name"}
    assert all(isinstance(messages, list) and messages for messages in error["details"].values())


def test_missing_and_unknown_fields_are_422(gateway):
    error = assert_error(gateway.post("/auth/signup", {"email": unique_email(), "is_superuser": True}),
                         422, "validation_failed")
    assert {"password", "name", "is_superuser"} <= set(error["details"])


@pytest.mark.parametrize("operator", [{"$gt": ""}, {"$ne": None}, ["x"], 5, True])
def test_query_operators_never_reach_a_query(gateway, owner, operator):
    login = gateway.post("/auth/login", {"email": operator, "password": owner.password})
    assert_error(login, 422, "validation_failed")
    assert "email" in login.json()["error"]["details"]
    rename = gateway.patch(f"/organizations/{owner.org_id}", {"name": operator}, owner.token)
    assert_error(rename, 422, "validation_failed")
    refresh = gateway.post("/auth/refresh", {"refresh_token": operator})
    assert_error(refresh, 422, "validation_failed")


@pytest.mark.parametrize("value", [1, 0, "true", "no"])
def test_booleans_must_be_json_booleans(gateway, owner, value):
    response = gateway.post(f"/organizations/{owner.org_id}/storage-reports", {"datasets": [], "complete": value},
                            superuser_token(gateway))
    assert "complete" in assert_error(response, 422, "validation_failed")["details"]


def test_org_name_rules(gateway, owner):
    for bad in ("", "   ", "x" * 101, "line\nbreak"):
        response = gateway.patch(f"/organizations/{owner.org_id}", {"name": bad}, owner.token)
        assert_error(response, 422, "validation_failed")
        assert "name" in response.json()["error"]["details"]


def test_unknown_route_and_method_use_the_error_shape(gateway, owner):
    assert_error(gateway.get("/no/such/route"), 404, "not_found")
    assert_error(gateway.request("PUT", f"/organizations/{owner.org_id}", owner.token, json={}),
                 405, "method_not_allowed")


def test_oversized_body_is_413(gateway):
    # the gateway answers without reading the body and closes the connection: don't reuse it
    response = gateway.request("POST", "/auth/login", data=b"{" + b" " * (2 * 1024 * 1024) + b"}",
                               headers={"Content-Type": "application/json", "Connection": "close"})
    assert_error(response, 413, "payload_too_large")


def test_overlong_request_target_is_414_in_the_error_shape(gateway, owner):
    members = f"/organizations/{owner.org_id}/members?q="
    assert_error(gateway.get(members + "x" * 20000, owner.token), 414, "uri_too_long")
    # longer than gunicorn's own request-line limit (8 KiB), within ours: validated like any input
    error = assert_error(gateway.get(members + "x" * 9000, owner.token), 422, "validation_failed")
    assert "q" in error["details"]


def test_every_response_has_security_headers(gateway):
    for response in (gateway.get("/no/such/route"), gateway.get(gateway.base_url + "/healthz")):
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]


def test_openapi_document_lists_every_operation(gateway):
    response = gateway.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.")
    from gateway.routes import api
    for operation in api.operations:
        entry = document["paths"][operation.openapi_path][operation.method.lower()]
        assert str(operation.status) in entry["responses"]
        if operation.body is not None:
            assert "requestBody" in entry
    assert "Error" in document["components"]["schemas"]


def test_health_and_readiness(gateway):
    assert gateway.get(gateway.base_url + "/healthz").json() == {"status": "ok"}
    ready = gateway.get(gateway.base_url + "/readyz")
    assert ready.status_code == 200, ready.text
    assert set(ready.json()["checks"]) == {"org", "membership", "notifications", "usage", "audit"}


class FlaskAnswer:
    """A Flask test response seen through the interface ``assert_error`` reads (requests')."""

    def __init__(self, response):
        self.status_code, self.headers = response.status_code, response.headers
        self.text = response.get_data(as_text=True)
        self.json = response.get_json


@pytest.fixture
def app(test_stack):
    """The gateway built by its own factory with a test configuration (the test stack's broker and key)."""
    application = create_app({"AMQP_URI": test_stack.amqp_uri, "JWT_PUBLIC_KEY_FILES": test_stack.public_key_file,
                              "RPC_TIMEOUT": 3})
    yield application
    application.extensions["revocation_consumer"].stop()
    application.extensions["rpc"].close()


def test_an_unexpected_exception_is_a_500_in_the_error_shape_without_details(app):
    secret = "db-password-hunter2 at /srv/secret/path.py line 42"

    @app.get("/api/v1/_test/boom")
    def boom():
        raise RuntimeError(secret)

    @app.get("/api/v1/_test/missing-key")
    def missing_key():
        return {}["no-such-key"]

    for path in ("/api/v1/_test/boom", "/api/v1/_test/missing-key"):
        answer = FlaskAnswer(app.test_client().get(path))
        error = assert_error(answer, 500, "internal_error")
        assert error["details"] == {} and error["message"] == "internal error"
        for leak in ("Traceback", "RuntimeError", "KeyError", "hunter2", "/srv/secret", "no-such-key", ".py"):
            assert leak not in answer.text, (leak, answer.text)
        assert answer.headers["Content-Type"] == "application/json"
        assert answer.headers["X-Content-Type-Options"] == "nosniff"  # the middleware adds it to errors too
