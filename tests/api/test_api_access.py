"""Keys, roles, sessions and CSRF: who may call what, against a real Redis (no models needed)."""

from __future__ import annotations

import json
import re

import pytest

from pipeline.api.access import KEYS, ApiKeys


def test_a_key_is_shown_once_and_only_its_hash_is_stored(redis_client):
    keys = ApiKeys(redis_client)
    key_id, key = keys.create("viewer")
    assert re.fullmatch(r"fsk_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", key) and key_id in key
    stored = redis_client.hget(KEYS, key_id).decode()
    assert key.split("_", 2)[2] not in stored and "sha256" in json.loads(stored)
    assert keys.verify(key).role == "viewer"
    assert keys.verify(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert keys.verify("fsk_000000000000_" + "x" * 43) is None and keys.verify("") is None
    listed = keys.list()
    assert [r.id for r in listed] == [key_id] and listed[0].last_used is not None
    assert "sha256" not in json.dumps([r.as_dict() for r in listed])
    assert keys.revoke(key_id) and not keys.revoke(key_id) and keys.verify(key) is None


def test_an_unknown_role_is_refused(redis_client):
    from pipeline.core.errors import ConfigError

    with pytest.raises(ConfigError, match="role must be one of"):
        ApiKeys(redis_client).create("root")


@pytest.mark.parametrize("headers, message", [
    ({}, "authentication required"),
    ({"Authorization": "Basic abc"}, "must be 'Bearer <API key>'"),
    ({"Authorization": "Bearer "}, "must be 'Bearer <API key>'"),
    ({"Authorization": "Bearer fsk_0123456789ab_" + "A" * 43}, "invalid or revoked"),
    ({"Authorization": "Bearer not-a-key"}, "invalid or revoked"),
])
def test_without_a_good_key_the_api_says_401(console, headers, message):
    reply = console.http.get("/api/v1/people", headers=headers)
    assert reply.status_code == 401 and message in reply.json()["error"]
    assert reply.headers["www-authenticate"] == "Bearer"


def test_a_viewer_reads_but_cannot_change_the_gallery(console):
    assert console.http.get("/api/v1/people", headers=console.viewer).status_code == 200
    for method, path, body in [("delete", "/api/v1/people/Anyone", None),
                               ("patch", "/api/v1/people/Anyone", {"name": "X"}),
                               ("post", "/api/v1/unknowns/unknown-00000000/name", {"name": "X"}),
                               ("delete", "/api/v1/unknowns/unknown-00000000", None),
                               ("get", "/api/v1/people/export", None)]:
        reply = console.http.request(method, path, headers=console.viewer, json=body)
        assert reply.status_code == 403, (method, path)
        assert "needs the admin role" in reply.json()["error"]


def test_a_revoked_key_is_refused_at_once(console):
    key_id, key = console.svc.keys.create("admin")
    headers = {"Authorization": f"Bearer {key}"}
    assert console.http.get("/api/v1/people", headers=headers).status_code == 200
    console.svc.keys.revoke(key_id)
    reply = console.http.get("/api/v1/people", headers=headers)
    assert reply.status_code == 401 and "revoked" in reply.json()["error"]


def login(http, key: str):
    page = http.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    return http.post("/login", data={"key": key, "csrf_token": token}, follow_redirects=False)


def test_login_opens_a_session_that_logout_and_revocation_end(console, make_console):
    other = make_console("test-api-login")
    http = other.http
    assert http.get("/people", follow_redirects=False).status_code == 303  # to the login page
    wrong = login(http, "fsk_0123456789ab_" + "A" * 43)
    assert wrong.status_code == 401 and "invalid or revoked" in wrong.text
    reply = login(http, other.viewer_key)
    assert reply.status_code == 303 and reply.headers["location"] == "/live"
    cookie = reply.headers["set-cookie"]
    assert "fs_session=" in cookie and "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
    assert other.viewer_key not in cookie
    assert http.get("/people").status_code == 200
    assert http.get("/api/v1/people").status_code == 200  # the pages' scripts use the session too
    page = http.get("/people").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    assert http.post("/logout", data={"csrf_token": token}, follow_redirects=False).status_code == 303
    assert http.get("/api/v1/people").status_code == 401
    # A session ends with its key.
    key_id, key = other.svc.keys.create("admin")
    assert login(http, key).status_code == 303
    assert http.get("/api/v1/people").status_code == 200
    other.svc.keys.revoke(key_id)
    assert http.get("/api/v1/people").status_code == 401
    other.http.close()


def test_forms_and_cookie_calls_need_the_csrf_token(make_console):
    other = make_console("test-api-csrf")
    http = other.http
    login(http, other.admin_key)
    missing = http.post("/people/Nobody/remove", data={}, follow_redirects=False)
    assert missing.status_code == 403 and "CSRF" in missing.text
    wrong = http.post("/people/Nobody/remove", data={"csrf_token": "x" * 43}, follow_redirects=False)
    assert wrong.status_code == 403
    api = http.delete("/api/v1/people/Nobody")  # a cookie alone may not change anything
    assert api.status_code == 403 and "CSRF" in api.json()["error"]
    token = re.search(r'name="csrf_token" value="([^"]+)"', http.get("/people").text).group(1)
    with_token = http.delete("/api/v1/people/Nobody", headers={"X-CSRF-Token": token})
    assert with_token.status_code == 404
    login_without = http.post("/login", data={"key": other.admin_key}, follow_redirects=False)
    assert login_without.status_code == 403
    other.http.close()


def test_health_is_public_and_says_little(console):
    reply = console.http.get("/api/v1/health")
    assert reply.status_code == 200 and reply.json() == {"status": "ok", "redis": True, "gallery": "test-api",
                                                         "version": "1"}


def test_openapi_docs_are_served(console):
    schema = console.http.get("/api/v1/openapi.json").json()
    for path in ("/api/v1/recognize", "/api/v1/people", "/api/v1/people/{name}", "/api/v1/unknowns",
                 "/api/v1/unknowns/{cluster_id}/name", "/api/v1/events", "/api/v1/events/stream",
                 "/api/v1/search", "/api/v1/cameras", "/api/v1/health", "/api/v1/metrics"):
        assert path in schema["paths"], path
    assert console.http.get("/api/v1/docs").status_code == 200


def test_unknown_routes_and_methods_are_json_errors(console):
    reply = console.http.get("/api/v1/nothing", headers=console.viewer)
    assert reply.status_code == 404 and "no such endpoint" in reply.json()["error"]
    reply = console.http.put("/api/v1/people", headers=console.admin)
    assert reply.status_code == 405 and "not allowed" in reply.json()["error"]


def test_redis_down_is_a_503_with_a_message(make_console):
    import redis

    broken = make_console("test-api-down")
    broken.svc.keys.client = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=None)
    reply = broken.http.get("/api/v1/people", headers=broken.viewer)
    assert reply.status_code == 503 and "Redis is unavailable" in reply.json()["error"]
    broken.http.close()


def test_logs_name_key_ids_never_keys(make_console, caplog):
    import logging

    caplog.set_level(logging.DEBUG)
    other = make_console("test-api-logs")
    key_id, key = other.svc.keys.create("viewer")
    login(other.http, key)
    other.http.get("/api/v1/people", headers={"Authorization": f"Bearer {key}"})
    other.svc.keys.revoke(key_id)
    secret = key.split("_", 2)[2]
    assert key_id in caplog.text and secret not in caplog.text and other.admin_key.split("_", 2)[2] not in caplog.text
    other.http.close()
