"""The Open Inference Protocol (KServe V2, what Triton, KServe, Seldon MLServer and TorchServe speak)
on `trainlab serve`, beside trainlab's own routes:

    GET  /v2                          server metadata
    GET  /v2/health/live, /ready      liveness, readiness
    GET  /v2/models/{name}[/versions/{v}]        model metadata: inputs, outputs, datatypes
    GET  /v2/models/{name}[/versions/{v}]/ready  model readiness
    POST /v2/models/{name}[/versions/{v}]/infer  inference

The model's name is the served run's id (or its recipe's name), version "1". Its input `images` is
a UINT8 tensor of raw images in the dataset's format, [N, H, W] for grayscale runs or [N, H, W, C]
for colour ones (the run's normalisation is applied here); its outputs are `probabilities` (FP32
[N, classes]) and `class_name` (BYTES [N]). Tensors come as JSON `data` or, with the binary tensor
data extension (what tritonclient sends by default), as raw bytes after the JSON header
(`Inference-Header-Content-Length`); outputs are binary when asked for. The limits, the token and
the one-line errors are the predict route's.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import BaseModel, Field, ValidationError

from trainlab.version import __version__
from trainlab.web.deps import MAX_PIXEL_IMAGES, LimiterDep, ServedDep, SettingsDep, run_model

router = APIRouter(prefix="/v2", tags=["open inference protocol"])
HEADER = "inference-header-content-length"


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class Ready(BaseModel):
    live: bool | None = None
    ready: bool | None = None


class InferInput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    data: list | None = None


class RequestedOutput(BaseModel):
    name: str
    parameters: dict[str, Any] = Field(default_factory=dict)


class InferRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    inputs: list[InferInput]
    outputs: list[RequestedOutput] | None = None


class InferOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list | None = None


class InferResponse(BaseModel):
    model_name: str
    model_version: str = "1"
    id: str | None = None
    outputs: list[InferOutput]


def _model(served, name: str, version: str | None):
    info = served.info
    if name not in (info["run_id"], info["recipe"]):
        raise HTTPException(404, f"no model '{name[:80]}' here: this server serves {info['run_id']}")
    if version not in (None, "1"):
        raise HTTPException(404, f"model {name[:80]} has version 1 only, not '{version[:20]}'")
    return served.predictor


def _input_shape(model) -> list[int]:
    c, h, w = model.preprocess.shape
    return [-1, h, w] if c == 1 else [-1, h, w, c]


@router.get("", response_model=ServerMetadata)
def server_metadata():
    return {"name": "trainlab", "version": __version__, "extensions": ["binary_tensor_data"]}


@router.get("/health/live", response_model=Ready, response_model_exclude_none=True)
def live():
    return {"live": True}


@router.get("/health/ready", response_model=Ready, response_model_exclude_none=True)
def ready(served: ServedDep):
    return {"ready": served.predictor is not None}


@router.get("/models/{name}", response_model=ModelMetadata)
@router.get("/models/{name}/versions/{version}", response_model=ModelMetadata)
def model_metadata(name: str, served: ServedDep, version: str | None = None):
    model = _model(served, name, version)
    platform = "onnxruntime_onnx" if served.info.get("backend") == "onnxruntime" else "pytorch"
    return {"name": served.info["run_id"], "versions": ["1"], "platform": platform,
            "inputs": [{"name": "images", "datatype": "UINT8", "shape": _input_shape(model)}],
            "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, len(model.classes)]},
                        {"name": "class_name", "datatype": "BYTES", "shape": [-1]}]}


@router.get("/models/{name}/ready", response_model=Ready, response_model_exclude_none=True)
@router.get("/models/{name}/versions/{version}/ready", response_model=Ready, response_model_exclude_none=True)
def model_ready(name: str, served: ServedDep, version: str | None = None):
    _model(served, name, version)
    return {"ready": True}


def _parse(raw: bytes, header_length: str | None) -> tuple[InferRequest, bytes]:
    if header_length is not None:
        plain = header_length.isascii() and header_length.isdigit() and len(header_length) <= 12  # not '²', not 5,000 digits
        if not plain or int(header_length) > len(raw):
            raise HTTPException(400, f"Inference-Header-Content-Length {header_length[:20]!r}: a byte count within the body")
        head, rest = raw[:int(header_length)], raw[int(header_length):]
    else:
        head, rest = raw, b""
    try:
        return InferRequest.model_validate_json(head), rest
    except ValidationError as exc:
        e = exc.errors()[0]
        where = ".".join(str(p) for p in e["loc"]) or "body"
        raise HTTPException(400, f"not an inference request: {where}: {e['msg']}"[:300]) from None


def _images(req: InferRequest, rest: bytes, model) -> np.ndarray:
    if len(req.inputs) != 1 or req.inputs[0].name != "images":
        raise HTTPException(400, "send one input, 'images' (UINT8, " + str(_input_shape(model)) + ")")
    t = req.inputs[0]
    if t.datatype != "UINT8":
        raise HTTPException(400, f"input images: datatype {t.datatype[:20]!r}; send UINT8 raw pixels 0-255")
    want = _input_shape(model)
    if len(t.shape) != len(want) or t.shape[1:] != want[1:] or t.shape[0] < 1:
        raise HTTPException(400, f"input images: shape {t.shape[:6]}; this model takes {want} (N images)")
    if t.shape[0] > MAX_PIXEL_IMAGES:
        raise HTTPException(413, f"{t.shape[0]} images in one request; the limit is {MAX_PIXEL_IMAGES}")
    count = int(np.prod(t.shape))
    size = t.parameters.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or size != count or size > len(rest):
            raise HTTPException(400, f"input images: binary_data_size {size!r}; {count} bytes are needed and "
                                     f"{len(rest)} came after the header")
        return np.frombuffer(bytearray(rest[:size]), dtype=np.uint8).reshape(t.shape)  # writable: torch takes it as is
    try:
        arr = np.asarray(t.data if t.data is not None else [])
        if arr.size and arr.dtype.kind not in "iu":  # UINT8 is whole numbers: 1.5, true or "7" are refused, never cast
            raise ValueError
        arr = arr.astype(np.int64)
    except (ValueError, TypeError, OverflowError):
        raise HTTPException(400, "input images: data must be whole numbers 0-255 (UINT8)") from None
    if arr.size != count or (arr.size and (arr.min() < 0 or arr.max() > 255)):
        raise HTTPException(400, f"input images: {arr.size} values 0-255 are needed for shape {t.shape}")
    return arr.astype(np.uint8).reshape(t.shape)


def _bytes_tensor(names: list[str]) -> bytes:
    return b"".join(struct.pack("<I", len(n.encode())) + n.encode() for n in names)


def _respond(name: str, req: InferRequest, probs: np.ndarray, classes: list[str]) -> Response:
    """JSON, or the JSON header and the binary outputs asked for (binary_data)."""
    labels = [classes[i] for i in probs.argmax(1)]
    wanted = req.outputs or [RequestedOutput(name="probabilities"), RequestedOutput(name="class_name")]
    binary_default = bool(req.parameters.get("binary_data_output"))
    outputs, blobs = [], []
    for o in wanted:
        if o.name not in ("probabilities", "class_name"):
            raise HTTPException(400, f"output {o.name[:60]!r}: this model has probabilities and class_name")
        binary = bool(o.parameters.get("binary_data", binary_default))
        if o.name == "probabilities":
            shape, dtype = list(probs.shape), "FP32"
            blob, data = probs.astype("<f4").tobytes(), probs.astype(np.float32).ravel().tolist()
        else:
            shape, dtype = [len(labels)], "BYTES"
            blob, data = _bytes_tensor(labels), labels
        if binary:
            outputs.append(InferOutput(name=o.name, shape=shape, datatype=dtype, parameters={"binary_data_size": len(blob)}))
            blobs.append(blob)
        else:
            outputs.append(InferOutput(name=o.name, shape=shape, datatype=dtype, data=data))
    head = InferResponse(model_name=name, id=req.id, outputs=outputs).model_dump_json(exclude_none=True).encode()
    if not blobs:
        return Response(head, media_type="application/json")
    return Response(head + b"".join(blobs), media_type="application/octet-stream", headers={"Inference-Header-Content-Length": str(len(head))})


@router.post("/models/{name}/infer", response_model=InferResponse)
@router.post("/models/{name}/versions/{version}/infer", response_model=InferResponse)
async def infer(name: str, request: Request, served: ServedDep, s: SettingsDep, limiter: LimiterDep, version: str | None = None):
    model = _model(served, name, version)
    req, rest = _parse(await request.body(), request.headers.get(HEADER))  # the guard bounded the body
    images = _images(req, rest, model)
    preds = await run_model(limiter, s.serve_timeout, lambda: model.predict(images if images.ndim == 4 else images[..., None]))
    return _respond(served.info["run_id"], req, np.asarray(preds.probs, dtype=np.float32), model.classes)
