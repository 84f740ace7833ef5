"""The console's pages and forms with a logged-in browser (TestClient keeps the cookies): every page renders,
forms change the gallery through the operator with the CSRF token, a viewer sees no forms that change it and
is refused if it posts one anyway."""

from __future__ import annotations

import json
import re
import time

import pytest
from api_seeds import alex_face, empty_gallery

from pipeline.events import IDENTITY_CONFIRMED, Event, events_key
from pipeline.unknowns.sightings import Seen


def log_in(http, key: str) -> str:
    token = re.search(r'name="csrf_token" value="([^"]+)"', http.get("/login").text).group(1)
    assert http.post("/login", data={"key": key, "csrf_token": token}, follow_redirects=False).status_code == 303
    return re.search(r'name="csrf_token" value="([^"]+)"', http.get("/people").text).group(1)


@pytest.fixture(scope="module")
def browser(console, make_console, photos):
    operator = console.operator
    empty_gallery(console)
    embedding, crop = alex_face(console, photos)
    cluster = operator.unknowns.new_cluster([Seen(embedding, "door", "door-t1", time.time(), 0.9, crop)])
    admin = make_console("test-api")  # its own cookie jar, same gallery
    viewer = make_console("test-api")
    return console, admin, log_in(admin.http, admin.admin_key), viewer, log_in(viewer.http, viewer.viewer_key), cluster


def test_every_page_renders_for_a_logged_in_user(browser):
    console, admin, _, _, _, cluster = browser
    entry = console.svc.client.xadd(events_key("test-api"), {
        "event_id": "e" * 32, "type": IDENTITY_CONFIRMED, "camera": "door",
        "data": json.dumps(Event(IDENTITY_CONFIRMED, "door", 1, "door-t1", "Ada", 0.9, 1, time.time(),
                                 event_id="e" * 32).to_json())}).decode()
    for path, marker in [("/live", 'id="no-live"'), ("/events", f'data-entry="{entry}"'),
                         (f"/events/{entry}", 'id="reject-form"'), ("/people", 'id="add-person-form"'),
                         ("/unknowns", f'id="name-form-{cluster}"'), (f"/unknowns/{cluster}", 'id="forget-form"'),
                         ("/search", 'id="search-form"')]:
        page = admin.http.get(path)
        assert page.status_code == 200 and marker in page.text, path
        assert 'name="csrf_token"' in page.text
    assert "no live frame (workers publish with console.snapshots: true)" in admin.http.get("/live").text
    client = console.svc.client
    client.set("fs:{test-api}:live:door", b"\xff\xd8jpeg\xff\xd9", ex=10)
    client.set("fs:{test-api}:camera:door", json.dumps({"fps": 12.5, "frames_dropped": 2, "state": "live"}), ex=10)
    live = admin.http.get("/live").text
    assert 'data-camera="door"' in live and 'src="/api/v1/cameras/door/snapshot"' in live and "fps 12.5" in live
    assert 'id="no-live"' not in live
    client.delete("fs:{test-api}:live:door", "fs:{test-api}:camera:door")
    assert admin.http.get("/people/Nobody").status_code == 404
    assert admin.http.get("/unknowns/unknown-00000000").status_code == 404
    assert admin.http.get("/events/1-0").status_code == 404
    assert admin.http.get("/", follow_redirects=False).headers["location"] == "/live"


def test_forms_enrol_name_and_remove_through_the_operator(browser, photos, bomb):
    console, admin, token, _, _, cluster = browser
    http = admin.http
    added = http.post("/people/add", data={"name": "Lin", "csrf_token": token},
                      files=[("images", ("lin.png", photos["lin"], "image/png")),
                             ("images", ("bomb.png", bomb, "image/png"))])
    assert added.status_code == 200 and "enrolled Lin: 1 template added" in added.text
    assert "rejected bomb.png: unreadable or not an image" in added.text
    assert console.operator.store.get("Lin").templates == 1
    named = http.post(f"/unknowns/{cluster}/name", data={"name": "Alex", "csrf_token": token})
    assert named.status_code == 200 and f"named {cluster} &#39;Alex&#39;" in named.text
    assert console.operator.store.get("Alex").templates == 1
    again = http.post(f"/unknowns/{cluster}/name", data={"name": "Alex", "csrf_token": token})
    assert "was named" in again.text and 'class="msg error"' in again.text
    renamed = http.post("/people/Lin/rename", data={"new_name": "Lin-Manuel", "csrf_token": token})
    assert "renamed &#39;Lin&#39; to &#39;Lin-Manuel&#39;" in renamed.text
    person = http.get("/people/Lin-Manuel").text
    assert 'data-testid="template"' in person and 'id="remove-form"' in person
    removed = http.post("/people/Lin-Manuel/remove", data={"csrf_token": token})
    assert "removed &#39;Lin-Manuel&#39;" in removed.text
    bad = http.post("/people/add", data={"name": "a/b", "csrf_token": token},
                    files=[("images", ("lin.png", photos["lin"], "image/png"))])
    assert "path separator" in bad.text


def test_the_search_form_finds_who_is_in_a_photo(browser, photos):
    _, admin, token, _, _, _ = browser
    found = admin.http.post("/search", data={"csrf_token": token},
                            files={"image": ("alex.png", photos["alex"], "image/png")})
    assert found.status_code == 200 and 'data-testid="match"' in found.text and 'data-id="Alex"' in found.text
    empty = admin.http.post("/search", data={"csrf_token": token}, files={"image": ("e.png", b"", "image/png")})
    assert empty.status_code == 400 and "empty (0 bytes)" in empty.text


def test_a_viewer_sees_no_changing_forms_and_is_refused_if_it_posts_one(browser):
    console, _, _, viewer, token, _ = browser
    page = viewer.http.get("/people").text
    assert 'id="add-person-form"' not in page and "viewer" in page
    refused = viewer.http.post("/people/Alex/remove", data={"csrf_token": token})
    assert refused.status_code == 403 and "needs the admin role" in refused.text
    assert console.operator.store.get("Alex").templates == 1
    assert viewer.http.get("/api/v1/people/export").status_code == 403
