"""From pixels and text to embeddings: the torch and ONNX backends, the one place that
chooses between them (choose.py), exporting and checking towers, and batching."""
