"""Olive's `Framework` enum, as published scripts compare against it."""

from enum import Enum


class Framework(str, Enum):
    ONNX = "ONNX"
    PYTORCH = "PyTorch"
    QNN = "QNN"
    TENSORFLOW = "TensorFlow"
    OPENVINO = "OpenVINO"
    SNPE = "SNPE"
