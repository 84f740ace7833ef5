"""MTCNN face detector with 5 landmarks: torch nets, ONNX export, batched multi-frame detection."""

from pipeline.detect.export import cached_onnx, export_onnx
from pipeline.detect.mtcnn import MTCNN

__all__ = ["MTCNN", "cached_onnx", "export_onnx"]

