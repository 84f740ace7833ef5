"""Seeds the API tests share (imported as `api_seeds`: pytest puts this folder on sys.path)."""

from __future__ import annotations

import cv2

from pipeline.core.images import decode_image
from pipeline.events import events_key


def empty_gallery(console) -> None:
    """The console's gallery with no person, no unknown cluster and no event."""
    operator = console.operator
    operator.store.clear()
    for cluster in operator.clusters():
        operator.forget(cluster.id)
    console.svc.client.delete(events_key(console.svc.gallery))


def alex_face(console, photos: dict[str, bytes]):
    """(embedding, 96 px crop) of Alex Lacamoire's reference photo: a real face to seed unknown clusters with."""
    image = decode_image(photos["alex"])
    embedding = next(e for _, e, _ in console.operator.image_faces(image) if e is not None)
    return embedding, cv2.resize(image[100:400, 100:400], (96, 96))
