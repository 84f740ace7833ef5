"""The composition root: config -> detector, embedder, gallery, matcher, sinks, built once for every entry
point (run.py, enroll.py, bench/, the trainer's CLI)."""
