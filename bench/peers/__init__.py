"""facestream against peers (face_recognition, facenet-pytorch's MTCNN) on the same inputs: `python -m bench.peers`.

`__main__` runs the measurements in order; `venvs` builds each peer's own venv and runs its `*_worker.py` there;
`lfw`, `detection`, `gallery` measure one figure each; `report` turns them into rows and ratios; `chart` draws them.
"""
