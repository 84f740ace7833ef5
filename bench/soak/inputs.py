"""What the soak streams and enrols: the three clips, the Hamilton pair, the LFW pool, the gallery name."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data"
HAMILTON = DATA / "ageitgey_face_recognition_examples"
VIDEOS = {"hamilton": HAMILTON / "video" / "short_hamilton_clip.mp4",
          "crowd": DATA / "facenet_pytorch_samples" / "video.mp4",
          "meeting": DATA / "opencv_tutorial_media" / "faces.mp4"}
PEOPLE = {"Lin-Manuel Miranda": [HAMILTON / "reference_photos" / "lin-manuel-miranda.png"],
          "Alex Lacamoire": [HAMILTON / "reference_photos" / "alex-lacamoire.png"]}
LFW = DATA / "lfw" / "images"
GALLERY = "soak"
