#!/usr/bin/env python
"""facestream: detect faces in images and write annotated copies.

    python run.py --source PATH [--source PATH ...] [--output DIR] [--config FILE] [--set key=value ...]

PATH is an image file or a folder of images. Each image gets an annotated copy in the output folder
(boxes, 5 landmarks, scores) and a line in `detections.json` there.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import cv2

from pipeline.annotate import annotate
from pipeline.config import AppConfig, load_config, save_resolved
from pipeline.errors import FacestreamError, SourceError
from pipeline.images import read_image
from pipeline.logs import configure_logging

log = logging.getLogger("run")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".pgm", ".tif", ".tiff"}


def image_files(sources: list[Path]) -> list[Path]:
    files: list[Path] = []
    for source in sources:
        if source.is_dir():
            files += sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif source.is_file():
            files.append(source)
        else:
            raise SourceError(f"source {source} does not exist")
    return files


def detect_images(cfg: AppConfig, sources: list[Path], output: Path) -> dict:
    from pipeline.detector import MTCNN

    d = cfg.detector
    detector = MTCNN(min_face_size=d.min_face_size, thresholds=d.thresholds, scale_factor=d.scale_factor,
                     engine=d.engine, max_side=d.max_side, threads=d.threads, pyramid=d.pyramid)
    output.mkdir(parents=True, exist_ok=True)
    records, started = [], time.perf_counter()
    for path in image_files(sources):
        try:
            image = read_image(path)
        except SourceError as exc:
            log.warning("%s", exc)
            records.append({"image": str(path), "error": str(exc)})
            continue
        faces = detector.detect_one(image)
        target = output / f"{path.parent.name}__{path.stem}.jpg"
        cv2.imwrite(str(target), annotate(image, faces))
        records.append({"image": str(path), "faces": len(faces), "annotated": str(target),
                        "boxes": faces.xyxy.round(1).tolist(), "scores": faces.score.round(3).tolist()})
        print(f"{len(faces):3d} faces  {path}")
    (output / "detections.json").write_text(json.dumps(records, indent=1) + "\n", encoding="utf-8")
    save_resolved(cfg, output)
    return {"images": len(records), "faces": sum(r.get("faces", 0) for r in records),
            "unreadable": sum("error" in r for r in records), "seconds": round(time.perf_counter() - started, 1),
            "output": str(output)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--source", action="append", type=Path, default=[], help="image file or folder")
    parser.add_argument("--output", type=Path, default=None, help="folder for annotated copies")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    try:
        cfg = load_config(args.config, args.set)
        sources = args.source or list(cfg.demo.inputs)
        if not sources:
            raise SourceError("no --source given and the config lists no demo.inputs")
        summary = detect_images(cfg, sources, args.output or cfg.demo.output_dir)
    except FacestreamError as exc:
        log.error("%s", exc)
        return 2
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
