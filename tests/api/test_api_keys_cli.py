"""`enroll.py keys create|list|revoke` against the test server: the key is printed once and works on the API."""

from __future__ import annotations

import json
from dataclasses import dataclass

import enroll as enroll_cli


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str


def test_keys_create_list_revoke(redis_server, console, capsys):
    def enroll(redis_server, *args: str) -> Done:
        try:
            code = enroll_cli.main(["--redis-url", redis_server.url, *args])
        except SystemExit as exc:  # argparse refusing the arguments
            code = exc.code
        out = capsys.readouterr()
        return Done(code, out.out, out.err)

    created = enroll(redis_server, "keys", "create", "--role", "viewer", "--json")
    assert created.returncode == 0, created.stderr
    made = json.loads(created.stdout)
    key, key_id = made["key"], made["id"]
    assert made["role"] == "viewer" and key.startswith(f"fsk_{key_id}_")
    headers = {"Authorization": f"Bearer {key}"}
    assert console.http.get("/api/v1/people", headers=headers).status_code == 200
    listed = enroll(redis_server, "keys", "list", "--json")
    keys = json.loads(listed.stdout)["keys"]
    assert key_id in [k["id"] for k in keys] and key.split("_", 2)[2] not in listed.stdout
    plain = enroll(redis_server, "keys", "create", "--role", "admin")
    assert plain.returncode == 0 and plain.stdout.strip().startswith("fsk_") and "shown only now" in plain.stderr
    revoked = enroll(redis_server, "keys", "revoke", key_id)
    assert revoked.returncode == 0 and f"revoked key {key_id}" in revoked.stdout
    assert console.http.get("/api/v1/people", headers=headers).status_code == 401
    again = enroll(redis_server, "keys", "revoke", key_id)
    assert again.returncode == 2 and "no API key" in again.stderr
    bad = enroll(redis_server, "keys", "create", "--role", "root")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
