"""Deployment: a fitted head exported as ONNX graphs and model.json (export.py, torch), the
runtime that predicts from that folder with numpy, Pillow and ONNX Runtime only (runtime.py),
and the HTTP server around it (server.py). docs/deploy.md."""
