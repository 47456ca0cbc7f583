"""slmforge: fine-tune a small language model from an Olive recipe and ship it as INT4 ONNX."""

__version__ = "0.1.0"
