"""POST /api/v1/recognize: who is in this photo (CompreFace-style), and POST /api/v1/search: where/when seen."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Request, UploadFile
from starlette.concurrency import run_in_threadpool

from pipeline.api.access import Principal
from pipeline.api.deps import multipart, read_upload, require_role, services
from pipeline.api.models import ErrorOut, RecognizeOut, SearchOut
from pipeline.api.services import Services
from pipeline.api.uploads import decode

router = APIRouter(tags=["recognize"], responses={k: {"model": ErrorOut} for k in (400, 401, 403, 413, 415, 429)})


@router.post("/recognize", response_model=RecognizeOut, dependencies=[Depends(multipart)],
             summary="Faces of a photo: box, 5 landmarks, identity or unknown id, similarity")
async def recognize(*, request: Request, image: Annotated[UploadFile, File(description="the photo (JPEG, PNG, ...)")],
                    who: Annotated[Principal, Depends(require_role("viewer"))], svc: Annotated[Services, Depends(services)]):
    request.app.state.recognize_limit.check(who.key_id)
    name, data = await read_upload(image, svc)
    faces = await run_in_threadpool(lambda: svc.operator.recognize(decode(svc, name, data)))
    return {"result": [face_out(f) for f in faces]}


@router.post("/search", response_model=SearchOut, dependencies=[Depends(multipart)],
             summary="Each face of a photo: the people and unknown people it matches, with where/when seen")
async def search(*, request: Request, image: Annotated[UploadFile, File()], limit: int = 10,
                 who: Annotated[Principal, Depends(require_role("viewer"))], svc: Annotated[Services, Depends(services)]):
    request.app.state.recognize_limit.check(who.key_id)
    name, data = await read_upload(image, svc)
    faces = await run_in_threadpool(lambda: svc.operator.search_image(decode(svc, name, data),
                                                                      max(1, min(limit, 100))))
    return {"faces": [f.as_dict() for f in faces]}


def face_out(face) -> dict:
    x0, y0, x1, y1 = face.box
    subjects = [{"subject": face.identity, "similarity": face.similarity}] if face.identity else []
    return {"box": {"probability": face.score, "x_min": x0, "y_min": y0, "x_max": x1, "y_max": y1},
            "landmarks": face.landmarks, "identity": face.identity, "unknown_id": face.unknown_id,
            "similarity": face.similarity, "threshold": face.threshold, "subjects": subjects,
            "rejected": face.rejected}
