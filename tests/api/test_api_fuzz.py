"""Hostile text in every place a name or id goes: the API answers with a JSON error (4xx), never a 500, and
changes nothing."""

from __future__ import annotations

from urllib.parse import quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

TEXT = st.text(min_size=0, max_size=60)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(name=TEXT, new=TEXT)
def test_names_and_ids_never_break_the_api(console, name, new):
    http, admin = console.http, console.admin
    before = console.svc.client.dbsize()
    segment = quote(name, safe="") or "%20"
    for method, path, body in [("get", f"/api/v1/people/{segment}", None),
                               ("patch", f"/api/v1/people/{segment}", {"name": new}),
                               ("delete", f"/api/v1/people/{segment}", None),
                               ("get", f"/api/v1/unknowns/{segment}", None),
                               ("post", f"/api/v1/unknowns/{segment}/name", {"name": new}),
                               ("post", f"/api/v1/unknowns/{segment}/merge", {"other": new}),
                               ("delete", f"/api/v1/unknowns/{segment}", None),
                               ("get", f"/api/v1/events/{segment}", None),
                               ("get", f"/api/v1/events?person={quote(name)}&camera={quote(new)}", None),
                               ("get", f"/api/v1/sightings/{segment}/crop", None),
                               ("get", f"/api/v1/cameras/{segment}/snapshot", None)]:
        reply = http.request(method, path, headers=admin, json=body)
        assert reply.status_code < 500, (method, path, reply.text)
        if reply.status_code >= 400:
            assert isinstance(reply.json()["error"], str) and reply.json()["error"]
    assert console.svc.client.dbsize() == before
