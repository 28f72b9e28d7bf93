"""A finished run put to use outside trainlab: exported to ONNX with its preparation inside, described
by a model card, and served.

- `export`: `export_onnx` (uint8 images in, probabilities out; checked before it is written) and
  `OnnxRun`; `graph_prep`: the photo preparation as ONNX-exportable tensor operations.
- `card`: the model card (what it was trained on, how well, its limits).
- `server`: `trainlab serve RUN`, the predict API for one run (torch or onnxruntime).
- `open_inference`: the Open Inference Protocol (KServe V2) routes under `/v2`.
"""
