"""/api/v1/people: the enrolled identities, their templates (and kept crops), photos added by upload, rename,
remove (everything of the person), export."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Response, UploadFile
from starlette.concurrency import run_in_threadpool

from pipeline.api.deps import multipart, read_upload, require_role, services
from pipeline.api.errors import ApiError
from pipeline.api.models import (
    ErrorOut,
    PeopleOut,
    PersonDetailOut,
    PersonOut,
    PhotosOut,
    RemovedOut,
    RenameIn,
)
from pipeline.api.services import Services
from pipeline.gallery import validate_name
from pipeline.gallery.portable import export_gallery

router = APIRouter(prefix="/people", tags=["people"],
                   responses={k: {"model": ErrorOut} for k in (400, 401, 403, 404, 409, 413, 415)})
viewer, admin = Depends(require_role("viewer")), Depends(require_role("admin"))


def person(identity) -> dict:
    return {"name": identity.name, "id": identity.id, "created": identity.created,
            "templates": identity.templates, "metadata": identity.metadata}


@router.get("", response_model=PeopleOut, dependencies=[viewer], summary="Every enrolled identity")
def people(*, svc: Annotated[Services, Depends(services)]):
    store = svc.operator.store
    return {"gallery": store.gallery, "fingerprint": store.fingerprint,
            "people": [person(p) for p in store.identities()]}


@router.get("/export", dependencies=[admin], summary="The gallery as enroll.py's portable JSON file")
def export(*, svc: Annotated[Services, Depends(services)]):
    with tempfile.TemporaryDirectory(prefix="facestream-export-") as folder:
        path = Path(folder) / "gallery.json"
        export_gallery(svc.operator.store, path)
        body = path.read_bytes()
    filename = f"{svc.gallery}.json"
    return Response(body, media_type="application/json",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


@router.get("/{name}", response_model=PersonDetailOut, dependencies=[viewer], summary="One identity")
def show(*, name: str, svc: Annotated[Services, Depends(services)]):
    store = svc.operator.store
    found = store.read_full(store.get(name).id)
    if found is None:
        raise ApiError(404, f"identity {name!r} was removed while being read")
    identity, template_ids, _ = found
    return {**person(identity), "template_ids": template_ids, "crops": crop_ids(svc, identity.id)}


@router.get("/{name}/templates/{template_id}/crop", dependencies=[viewer], summary="A template's face (JPEG)",
            response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
def template_crop(*, name: str, template_id: str, svc: Annotated[Services, Depends(services)]):
    identity = svc.operator.store.get(name)
    data = svc.operator.store.crop(identity.id, template_id)
    if not data:
        raise ApiError(404, f"no face crop kept for template {template_id!r} of {identity.name!r} "
                            "(templates enrolled before crops were kept have none)")
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=300"})


@router.post("", response_model=PhotosOut, dependencies=[admin, Depends(multipart)], status_code=200,
             responses={422: {"model": ErrorOut, "description": "no photo was accepted (each one's reason)"}},
             summary="Enrol photos as a person (new or existing): enroll.py add's gates and reasons")
async def add(*, name: Annotated[str, Form(max_length=200)], images: Annotated[list[UploadFile], File()], largest: Annotated[bool, Form()] = False,
              svc: Annotated[Services, Depends(services)]):
    return await add_photos(svc, name, images, largest)


@router.post("/{name}/photos", response_model=PhotosOut, dependencies=[admin, Depends(multipart)],
             summary="Add photos to a person")
async def add_to(*, name: str, images: Annotated[list[UploadFile], File()], largest: Annotated[bool, Form()] = False,
                 svc: Annotated[Services, Depends(services)]):
    return await add_photos(svc, name, images, largest)


async def add_photos(svc: Services, name: str, images: list[UploadFile], largest: bool) -> dict:
    name = validate_name(name)
    if len(images) > svc.limits.max_files:
        raise ApiError(413, f"{len(images)} files: at most {svc.limits.max_files} per upload")
    uploads = [await read_upload(image, svc, "images") for image in images]
    added = await run_in_threadpool(svc.operator.add_photos, name, uploads, largest)
    accepted = sum(o.accepted for o in added.outcomes)
    if not accepted:  # enroll.py's exit 1: said as an error, with each photo's reason
        reasons = "; ".join(f"{o.where}: {o.reason}" + (f" ({o.detail})" if o.detail else "") for o in added.outcomes)
        raise ApiError(422, f"nothing enrolled, the gallery is unchanged: {reasons}")
    return {"name": added.name, "created": added.created, "accepted": accepted,
            "rejected": len(added.outcomes) - accepted, "added": added.added, "duplicates": added.duplicates,
            "templates": added.templates,
            "outcomes": [{"file": o.where, "accepted": o.accepted, "template_id": o.template_id,
                          "reason": o.reason, "detail": o.detail} for o in added.outcomes]}


@router.patch("/{name}", response_model=PersonOut, dependencies=[admin], summary="Rename")
def rename(*, name: str, body: RenameIn, svc: Annotated[Services, Depends(services)]):
    return person(svc.operator.rename(name, validate_name(body.name)))


@router.delete("/{name}", response_model=RemovedOut, dependencies=[admin],
               summary="Forget the person: templates, negatives, sightings and crops")
def remove(*, name: str, svc: Annotated[Services, Depends(services)]):
    templates, sightings = svc.operator.remove_person(name)
    return {"name": name, "templates_removed": templates, "sightings_removed": sightings}


@router.delete("/{name}/templates/{template_id}", dependencies=[admin], summary="Remove one template")
def remove_template(*, name: str, template_id: str, svc: Annotated[Services, Depends(services)]):
    removed = svc.operator.remove_templates(name, [template_id])
    if not removed:
        raise ApiError(404, f"{name!r} has no template {template_id!r}")
    return {"name": name, "templates_removed": removed}


def crop_ids(svc: Services, identity_id: str) -> list[str]:
    """The template ids of the identity that have a kept aligned crop (enrolled since crops are kept)."""
    return sorted(svc.operator.store.read_crops(identity_id))
