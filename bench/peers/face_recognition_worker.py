"""face_recognition's side of `bench.peers`, run by its own venv (see `bench.peers.venvs`); never imported.

Jobs (the JSON argument's "job" key):
- "lfw": its own pipeline on raw LFW images: HOG `face_locations` (the face nearest the centre when there are
  several), else a centred square of `fallback_fraction` of the image as a known location; then
  `face_encodings` on that location. Embeddings go to `out` (.npy); for fallback images the whole image as
  the location is encoded too (`out_whole`). Times detection and encoding separately (wall and CPU).
- "detect": HOG `face_locations` on each image, as xyxy boxes.
"""

import json
import sys
import time

import face_recognition
import numpy as np


def progress(done, total):
    if done % 10 == 0 or done == total:
        print(f"progress {done} {total}", file=sys.stderr, flush=True)


def nearest_centre(locations, shape):
    cy, cx = shape[0] / 2, shape[1] / 2
    return min(locations, key=lambda l: ((l[0] + l[2]) / 2 - cy) ** 2 + ((l[1] + l[3]) / 2 - cx) ** 2)


def centre_box(shape, fraction):
    """(top, right, bottom, left) of the centred square whose side is `fraction` of the shorter side."""
    side = fraction * min(shape[:2])
    top, left = (shape[0] - side) / 2, (shape[1] - side) / 2
    return int(round(top)), int(round(left + side)), int(round(top + side)), int(round(left))


class Clock:
    def __init__(self):
        self.wall = self.cpu = 0.0
        self.calls = 0

    def __call__(self, fn, *args, **kwargs):
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn(*args, **kwargs)
        self.wall += time.perf_counter() - wall
        self.cpu += time.process_time() - cpu
        self.calls += 1
        return out

    def report(self):
        return {"calls": self.calls, "wall_s": round(self.wall, 3), "cpu_s": round(self.cpu, 3)}


def lfw(job):
    images = job["images"]
    detect, encode = Clock(), Clock()
    embeddings, whole, fallback_index, several = [], [], [], 0
    for i, path in enumerate(images):
        image = face_recognition.load_image_file(path)
        locations = detect(face_recognition.face_locations, image)
        several += len(locations) > 1
        if locations:
            location = nearest_centre(locations, image.shape)
        else:
            location = centre_box(image.shape, job["fallback_fraction"])
            fallback_index.append(i)
            whole.append(face_recognition.face_encodings(image, [(0, image.shape[1], image.shape[0], 0)])[0])
        embeddings.append(encode(face_recognition.face_encodings, image, [location])[0])
        progress(i + 1, len(images))
    np.save(job["out"], np.asarray(embeddings, np.float64))
    np.save(job["out_whole"], np.asarray(whole, np.float64).reshape(-1, 128))
    return {"images": len(images), "fallback": len(fallback_index), "fallback_index": fallback_index,
            "several_faces": several, "detect": detect.report(), "encode": encode.report()}


def detect_boxes(job):
    boxes = []
    for i, path in enumerate(job["images"]):
        locations = face_recognition.face_locations(face_recognition.load_image_file(path))
        boxes.append([[left, top, right, bottom] for top, right, bottom, left in locations])
        progress(i + 1, len(job["images"]))
    return {"boxes": boxes}


def versions():
    from importlib.metadata import version

    import dlib

    return {"dlib": dlib.__version__, "face_recognition": version("face_recognition"),
            "face_recognition_models": version("face_recognition_models"), "numpy": np.__version__}


if __name__ == "__main__":
    job = json.loads(sys.argv[1])
    result = {"lfw": lfw, "detect": detect_boxes}[job["job"]](job)
    result["versions"] = versions()
    print(json.dumps(result))
