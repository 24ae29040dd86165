"""Deployment: verified ONNX export and ONNX Runtime sessions."""

from slimkit.deploy.onnx_export import (
    DEFAULT_OPSET,
    ExportError,
    ExportResult,
    export_onnx,
    ort_session,
    read_onnx_metadata,
)

__all__ = ["DEFAULT_OPSET", "ExportError", "ExportResult", "export_onnx", "ort_session",
           "read_onnx_metadata"]
