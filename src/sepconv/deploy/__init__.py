"""Deployment: BatchNorm folding and runtime rewrites, ONNX export with verification, runtimes."""
