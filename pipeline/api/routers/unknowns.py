"""/api/v1/unknowns: the unknown people (clusters of unnamed faces): list, show, name, merge, forget; and the
face crops of sightings (/api/v1/sightings/{id}/crop)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from pipeline.api.deps import require_role, services
from pipeline.api.errors import ApiError
from pipeline.api.models import (
    ClusterDetailOut,
    ClustersOut,
    ErrorOut,
    ForgotOut,
    MergedOut,
    MergeIn,
    NamedOut,
    NameIn,
    SightingRemovedOut,
)
from pipeline.api.services import Services
from pipeline.gallery import validate_name
from pipeline.unknowns.keys import validate_sighting_id

router = APIRouter(tags=["unknowns"], responses={k: {"model": ErrorOut} for k in (400, 401, 403, 404, 409)})
viewer, admin = Depends(require_role("viewer")), Depends(require_role("admin"))


@router.get("/unknowns", response_model=ClustersOut, dependencies=[viewer], summary="Every unknown person")
def clusters(*, svc: Annotated[Services, Depends(services)]):
    return {"gallery": svc.gallery, "retention_days": svc.limits.retention_days,
            "clusters": [c.as_dict() for c in svc.operator.clusters()]}


@router.get("/unknowns/{cluster_id}", response_model=ClusterDetailOut, dependencies=[viewer],
            summary="One unknown person's sightings")
def cluster(*, cluster_id: str, limit: int = 200, svc: Annotated[Services, Depends(services)]):
    found, sightings = svc.operator.cluster(cluster_id, limit=max(1, min(limit, 1000)))
    return {**found.as_dict(), "sightings_list": [s.as_dict() for s in sightings]}


@router.post("/unknowns/{cluster_id}/name", response_model=NamedOut, dependencies=[admin],
             summary="Enrol the cluster's best faces as this person (new or existing)")
def name(*, cluster_id: str, body: NameIn, svc: Annotated[Services, Depends(services)]):
    return svc.operator.name(cluster_id, validate_name(body.name)).__dict__


@router.post("/unknowns/{cluster_id}/merge", response_model=MergedOut, dependencies=[admin],
             summary="`other`'s faces join this cluster, whose id survives")
def merge(*, cluster_id: str, body: MergeIn, svc: Annotated[Services, Depends(services)]):
    if body.other == cluster_id:
        raise ApiError(400, f"cannot merge {cluster_id} into itself")
    return {"kept": cluster_id, "merged": svc.operator.merge(cluster_id, body.other)}


@router.delete("/unknowns/{cluster_id}", response_model=ForgotOut, dependencies=[admin],
               summary="Forget the cluster: every sighting and crop it holds")
def forget(*, cluster_id: str, svc: Annotated[Services, Depends(services)]):
    svc.operator.unknowns.cluster(cluster_id)  # 404 (saying where it went) before anything is deleted
    return {"id": cluster_id, "sightings_removed": svc.operator.forget(cluster_id)}


@router.delete("/unknowns/{cluster_id}/sightings/{sighting_id}", response_model=SightingRemovedOut,
               dependencies=[admin], summary="Not this person: one face leaves the cluster (deleted with its crop)")
def not_this_person(*, cluster_id: str, sighting_id: str, svc: Annotated[Services, Depends(services)]):
    remains = svc.operator.not_this_person(cluster_id, sighting_id)
    return {"id": cluster_id, "sighting": sighting_id, "cluster_remains": remains}


@router.get("/sightings/{sighting_id}/crop", dependencies=[viewer], response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}}}, summary="A sighting's face crop (JPEG)")
def sighting_crop(*, sighting_id: str, svc: Annotated[Services, Depends(services)]):
    found = svc.operator.unknowns.sighting(validate_sighting_id(sighting_id), crops=True)
    if found is None or not found.crop_jpeg:
        raise ApiError(404, f"no sighting {sighting_id} with a crop (expired, forgotten, or never kept)")
    return Response(found.crop_jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=300"})
