"""Helpers for end-to-end tests: an HTTP client for the gateway and condition polling."""
import time
import uuid

import requests


def wait_until(check, timeout=10.0, interval=0.05, what="condition"):
    """Poll ``check`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError("timed out after %.1fs waiting for %s (last value: %r)" % (timeout, what, last))


def unique_email(prefix="user"):
    return "%s-%s@example.test" % (prefix, uuid.uuid4().hex[:12])


class Gateway:
    def __init__(self, base_url):
        self.base_url = base_url
        self.api = base_url + "/api/v1"
        self.http = requests.Session()

    def request(self, method, path, token=None, json=None, data=None, headers=None, timeout=15):
        headers = dict(headers or {})
        if token:
            headers["Authorization"] = "Bearer " + token
        url = path if path.startswith("http") else self.api + path
        return self.http.request(method, url, json=json, data=data, headers=headers, timeout=timeout)

    def get(self, path, token=None, **kw):
        return self.request("GET", path, token, **kw)

    def post(self, path, json=None, token=None, **kw):
        return self.request("POST", path, token, json=json, **kw)

    def patch(self, path, json=None, token=None, **kw):
        return self.request("PATCH", path, token, json=json, **kw)

    def delete(self, path, json=None, token=None, **kw):
        return self.request("DELETE", path, token, json=json, **kw)

    def signup(self, organization_name="Test Lab", email=None, password="correct horse battery",
               name="Test User"):
        body = {"email": email or unique_email(), "password": password, "name": name}
        if organization_name is not None:
            body["organization_name"] = organization_name
        response = self.post("/auth/signup", body)
        assert response.status_code == 201, response.text
        return Account(response.json(), password)


class Account:
    def __init__(self, data, password):
        self.data = data
        self.password = password
        self.token = data["access_token"]
        self.refresh_token = data["refresh_token"]
        self.user_id = data["user"]["id"]
        self.email = data["user"]["email"]
        self.org_id = (data.get("organization") or {}).get("id")


def assert_error(response, status, code=None):
    """The contract's error shape, with the expected status (and code)."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]
