"""MTCNN face detector with 5 landmarks: torch nets, ONNX export, batched multi-frame detection."""

from pipeline.detect.export import cached_onnx, export_onnx
from pipeline.detect.mtcnn import MTCNN

__all__ = ["MTCNN", "cached_onnx", "detector_from_config", "export_onnx"]


def detector_from_config(config, min_face_size: int | None = None) -> MTCNN:
    """The MTCNN an entry point's `detector` config section (pipeline.config.DetectorConfig) describes."""
    return MTCNN(min_face_size=min_face_size or config.min_face_size, thresholds=config.thresholds,
                 scale_factor=config.scale_factor, engine=config.engine, max_side=config.max_side,
                 threads=config.threads, pyramid=config.pyramid)
