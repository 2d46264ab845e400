"""Running the official ONNX backend node tests through tensorkiln's public API."""
