"""INT8 quantization: ONNX Runtime static PTQ with an accuracy guard, cross-layer
equalization and bias correction, and quantization-aware training."""

from slimkit.compress.quantization.ptq import (
    CALIBRATION_METHODS,
    QuantResult,
    int8_node_types,
    layer_sqnr,
    onnx_accuracy,
    quantize_onnx,
    quantize_with_guard,
)

__all__ = ["CALIBRATION_METHODS", "QuantResult", "int8_node_types", "layer_sqnr",
           "onnx_accuracy", "quantize_onnx", "quantize_with_guard"]
