"""The gateway's answers that need no service: built by its factory with no broker reachable, it
starts no thread and every such answer is in the one error shape with its headers."""
import pytest

from gateway.app import create_app
from tests.support import free_port


@pytest.fixture(scope="module")
def client():
    app = create_app({"AMQP_URI": f"amqp://guest:guest@127.0.0.1:{free_port()}/", "CONSOLE_SESSION_KEY": "unit"})
    assert not app.extensions["revocation_consumer"].is_alive()  # started by gunicorn after the fork only
    return app.test_client()


def error_of(response, status, code):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["X-Content-Type-Options"] == "nosniff" and response.headers["X-Request-ID"]
    body = response.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    return body["error"]


def test_an_unknown_path_is_404(client):
    error_of(client.get("/api/v1/no-such-thing"), 404, "not_found")


def test_a_wrong_method_is_405_and_says_what_is_allowed(client):
    response = client.delete("/api/v1/auth/login")
    error_of(response, 405, "method_not_allowed")
    assert "POST" in response.headers["Allow"]


def test_a_too_long_target_is_414(client):
    error_of(client.get("/api/v1/" + "x" * 20000), 414, "uri_too_long")


def test_a_body_that_is_not_json_is_415(client):
    error_of(client.post("/api/v1/auth/login", data="email=a", content_type="text/plain"), 415,
             "unsupported_media_type")


def test_a_client_request_id_is_kept(client):
    assert client.get("/api/v1/no-such-thing", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"] == "abc-123"
