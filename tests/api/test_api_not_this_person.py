""""Not this person": one face leaves an unknown cluster (deleted with its crop), by the API and by the page's
form; the cluster goes with its last face; hostile ids and a viewer's key change nothing."""

from __future__ import annotations

import time

import pytest
from api_seeds import alex_face
from test_api_pages import log_in

from pipeline.unknowns.sightings import Seen


@pytest.fixture
def cluster(console, photos):
    operator = console.operator
    embedding, crop = alex_face(console, photos)
    now = time.time()
    cluster_id = operator.unknowns.new_cluster([Seen(embedding, "door", "door-t1", now - 9, 0.9, crop),
                                                Seen(embedding, "door", "door-t1", now - 8, 0.8, crop)])
    return cluster_id, [s.id for s in operator.unknowns.sightings(cluster_id)]


def test_the_api_removes_one_face_then_the_cluster_with_its_last(console, cluster):
    cluster_id, (first, second) = cluster
    http, admin = console.http, console.admin
    assert http.delete(f"/api/v1/unknowns/{cluster_id}/sightings/{first}", headers=console.viewer).status_code == 403
    removed = http.delete(f"/api/v1/unknowns/{cluster_id}/sightings/{first}", headers=admin)
    assert removed.status_code == 200 and removed.json()["cluster_remains"] is True
    assert http.get(f"/api/v1/sightings/{first}/crop", headers=admin).status_code == 404
    assert http.delete(f"/api/v1/unknowns/{cluster_id}/sightings/{first}", headers=admin).status_code == 404
    last = http.delete(f"/api/v1/unknowns/{cluster_id}/sightings/{second}", headers=admin)
    assert last.json()["cluster_remains"] is False
    assert http.get(f"/api/v1/unknowns/{cluster_id}", headers=admin).status_code == 404


@pytest.mark.parametrize("path", ["/api/v1/unknowns/unknown-zz/sightings/0123456789abcdef",
                                  "/api/v1/unknowns/{cluster}/sightings/nothex",
                                  "/api/v1/unknowns/{cluster}/sightings/0123456789abcdef"])
def test_hostile_ids_are_a_clear_error_and_remove_nothing(console, cluster, path):
    cluster_id, faces = cluster
    reply = console.http.delete(path.format(cluster=cluster_id), headers=console.admin)
    assert reply.status_code in (400, 404) and reply.json()["error"]
    assert len(console.operator.unknowns.sightings(cluster_id)) == len(faces)


def test_the_cluster_page_has_a_not_this_person_form_per_face(make_console, cluster):
    cluster_id, (first, _) = cluster
    admin = make_console("test-api")
    token = log_in(admin.http, admin.admin_key)
    page = admin.http.get(f"/unknowns/{cluster_id}").text
    assert page.count('data-testid="not-this-person"') == 2
    done = admin.http.post(f"/unknowns/{cluster_id}/sightings/{first}/remove", data={"csrf_token": token})
    assert done.status_code == 200 and "not this person" in done.text
    assert admin.http.post(f"/unknowns/{cluster_id}/sightings/{first}/remove", data={}).status_code == 403  # no CSRF
    assert len(admin.operator.unknowns.sightings(cluster_id)) == 1
