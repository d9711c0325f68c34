"""The data-only wire format between the grader and a worker.

What crosses the process boundary is a tree of plain data: None, bool, int,
float, str, bytes, list, tuple, dict, tensors, numpy arrays, torch dtypes and
devices, generators (by their state) and opaque handles to objects that stay
in the worker. Nothing is ever pickled. A frame is

    8-byte little-endian header length | JSON header | raw buffers

where the JSON header describes the tree and points into the buffers. Decoding
is a strict walk over that JSON: every node is checked (known tag, known dtype,
shape matching its buffer, depth and size caps), so a hostile worker can at
worst send a wrong answer, never run code in the grader.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

MAX_DEPTH = 64
DEFAULT_MAX_BYTES = 512 * 2**20
MAX_HEADER_BYTES = 64 * 2**20

DTYPES: dict[str, torch.dtype] = {
    "bool": torch.bool,
    "uint8": torch.uint8,
    "int8": torch.int8,
    "int16": torch.int16,
    "int32": torch.int32,
    "int64": torch.int64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
    "complex64": torch.complex64,
    "complex128": torch.complex128,
}
DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}
NUMPY_DTYPES = {"bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64"}


class CodecError(ValueError):
    """Raised for a value that cannot be encoded or a frame that is not valid."""


@dataclass(frozen=True)
class Handle:
    """An object that stays in the worker, known to the grader by number."""

    id: int
    type_name: str = "object"
    callable: bool = False


# ---------------------------------------------------------------- encoding


class _Encoder:
    def __init__(self, to_handle: Callable[[Any], Handle] | None, with_grad: bool):
        self.buffers: list[bytes] = []
        self.to_handle = to_handle
        self.with_grad = with_grad

    def buffer(self, data: bytes) -> int:
        self.buffers.append(data)
        return len(self.buffers) - 1

    def tensor(self, t: torch.Tensor) -> dict:
        if t.is_quantized or t.device.type == "meta":
            raise CodecError(f"cannot send a {'quantized' if t.is_quantized else 'meta'} tensor")
        if t.dtype not in DTYPE_NAMES:
            raise CodecError(f"cannot send a tensor of dtype {t.dtype}")
        data = t.detach()
        if data.layout != torch.strided:
            data = data.to_dense()
        data = data.resolve_conj().resolve_neg().cpu().contiguous().reshape(-1)
        raw = data.view(torch.uint8).numpy().tobytes() if data.numel() else b""
        node = {"$tensor": self.buffer(raw), "dtype": DTYPE_NAMES[t.dtype],
                "shape": list(t.shape), "device": str(t.device)}
        if self.with_grad and t.requires_grad:
            node["requires_grad"] = True
        return node

    def encode(self, value: Any, depth: int = 0) -> Any:
        if depth > MAX_DEPTH:
            raise CodecError(f"value nested deeper than {MAX_DEPTH} levels")
        if value is None or type(value) is bool:
            return value
        if isinstance(value, str):
            return str.__str__(value)  # an exact str, even from a str subclass
        if isinstance(value, int):
            return int(value)
        if isinstance(value, float):
            return float(value)
        if isinstance(value, np.generic) and not isinstance(value, np.object_):
            return self.encode(value.item(), depth + 1)
        if isinstance(value, torch.Tensor):
            return self.tensor(value)
        if isinstance(value, np.ndarray):
            if value.dtype.name not in NUMPY_DTYPES:
                raise CodecError(f"cannot send a numpy array of dtype {value.dtype}")
            node = self.tensor(torch.from_numpy(np.ascontiguousarray(value)))
            node["numpy"] = True
            return node
        if isinstance(value, (bytes, bytearray, memoryview)):
            return {"$bytes": self.buffer(bytes(value))}
        if isinstance(value, torch.dtype):
            if value not in DTYPE_NAMES:
                raise CodecError(f"cannot send dtype {value}")
            return {"$dtype": DTYPE_NAMES[value]}
        if isinstance(value, torch.device):
            return {"$device": str(value)}
        if isinstance(value, torch.Generator):
            return {"$generator": {"device": str(value.device),
                                   "state": self.tensor(value.get_state())}}
        if isinstance(value, Handle):
            return {"$handle": value.id, "type": value.type_name, "callable": value.callable}
        if isinstance(value, dict):
            return {"$dict": [[self.encode(k, depth + 1), self.encode(v, depth + 1)]
                              for k, v in value.items()]}
        if isinstance(value, tuple):  # torch.Size and named tuples included
            return {"$tuple": [self.encode(v, depth + 1) for v in value]}
        if isinstance(value, list):
            return [self.encode(v, depth + 1) for v in value]
        if self.to_handle is not None:
            return self.encode(self.to_handle(value), depth)
        raise CodecError(f"cannot send a value of type {type(value).__name__}")


def encode(value: Any, *, to_handle: Callable[[Any], Handle] | None = None,
           with_grad: bool = False, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """Encode `value` into one frame.

    `to_handle` turns anything that is not data into a Handle (the worker's
    side); without it such a value is a CodecError. `with_grad` records
    `requires_grad` of tensors (the grader's side, for backward passes).
    """
    enc = _Encoder(to_handle, with_grad)
    tree = enc.encode(value)
    lengths = [len(b) for b in enc.buffers]
    header = json.dumps({"tree": tree, "buffers": lengths}, allow_nan=True).encode()
    size = 8 + len(header) + sum(lengths)
    if size > max_bytes:
        raise CodecError(f"value too large to send ({size / 2**20:.1f} MiB, "
                         f"limit {max_bytes / 2**20:.0f} MiB)")
    return b"".join([struct.pack("<Q", len(header)), header, *enc.buffers])


# ---------------------------------------------------------------- decoding


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise CodecError(message)


class _Decoder:
    def __init__(self, buffers: list[memoryview], from_handle: Callable[[Handle], Any] | None,
                 with_grad: bool):
        self.buffers = buffers
        self.from_handle = from_handle
        self.with_grad = with_grad

    def raw(self, index: Any) -> memoryview:
        _check(type(index) is int and 0 <= index < len(self.buffers), "bad buffer index")
        return self.buffers[index]

    def tensor(self, node: dict) -> torch.Tensor:
        allowed = {"$tensor", "dtype", "shape", "device", "requires_grad", "numpy"}
        _check(set(node) <= allowed, f"unexpected tensor fields {sorted(set(node) - allowed)}")
        dtype = DTYPES.get(node.get("dtype"))
        _check(dtype is not None, f"unknown dtype {node.get('dtype')!r}")
        shape = node.get("shape")
        _check(isinstance(shape, list) and len(shape) <= 32
               and all(type(s) is int and s >= 0 for s in shape), "bad tensor shape")
        raw = self.raw(node["$tensor"])
        itemsize = torch.empty((), dtype=dtype).element_size()
        _check(math.prod(shape) * itemsize == len(raw), "tensor shape does not match its data")
        if len(raw):
            t = torch.frombuffer(bytearray(raw), dtype=dtype).reshape(shape)
        else:
            t = torch.empty(shape, dtype=dtype)
        device = node.get("device", "cpu")
        _check(isinstance(device, str), "bad device")
        t = t.to(_device(device))
        if node.get("numpy"):
            _check(node["dtype"] in NUMPY_DTYPES and device == "cpu", "bad numpy array")
            return t.numpy()
        if self.with_grad and node.get("requires_grad") is True:
            _check(t.is_floating_point() or t.is_complex(), "only float tensors can require grad")
            t.requires_grad_(True)
        return t

    def decode(self, node: Any, depth: int = 0) -> Any:
        _check(depth <= MAX_DEPTH, f"frame nested deeper than {MAX_DEPTH} levels")
        if node is None or type(node) in (bool, int, float, str):
            return node
        if type(node) is list:
            return [self.decode(v, depth + 1) for v in node]
        _check(type(node) is dict and len(node) >= 1, f"unexpected node {type(node).__name__}")
        if "$tensor" in node:
            return self.tensor(node)
        tag = next(iter(node))
        body = node[tag]
        if tag == "$tuple":
            _check(type(body) is list and len(node) == 1, "bad tuple")
            return tuple(self.decode(v, depth + 1) for v in body)
        if tag == "$dict":
            _check(type(body) is list and len(node) == 1, "bad dict")
            out = {}
            for pair in body:
                _check(type(pair) is list and len(pair) == 2, "bad dict entry")
                key = self.decode(pair[0], depth + 1)
                _check(_hashable(key), f"unhashable dict key of type {type(key).__name__}")
                out[key] = self.decode(pair[1], depth + 1)
            return out
        if tag == "$bytes":
            return bytes(self.raw(body))
        if tag == "$dtype":
            _check(body in DTYPES, f"unknown dtype {body!r}")
            return DTYPES[body]
        if tag == "$device":
            _check(isinstance(body, str), "bad device")
            return _device(body)
        if tag == "$generator":
            _check(type(body) is dict and set(body) == {"device", "state"}, "bad generator")
            gen = torch.Generator(device=_device(body["device"]))
            state = self.decode(body["state"], depth + 1)
            _check(isinstance(state, torch.Tensor) and state.dtype == torch.uint8, "bad generator state")
            try:
                gen.set_state(state.cpu())
            except RuntimeError as exc:
                raise CodecError(f"bad generator state: {exc}") from None
            return gen
        if tag == "$handle":
            _check(type(body) is int and set(node) <= {"$handle", "type", "callable"}, "bad handle")
            handle = Handle(body, str(node.get("type", "object"))[:200], node.get("callable") is True)
            return self.from_handle(handle) if self.from_handle else handle
        raise CodecError(f"unknown tag {tag!r}")


def _hashable(key: Any) -> bool:
    if isinstance(key, tuple):
        return all(_hashable(k) for k in key)
    return key is None or type(key) in (bool, int, float, str, bytes)


def _device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CodecError(f"unknown device {name!r}") from None
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type == "cuda" and torch.cuda.is_available():
        index = device.index or 0
        _check(index < torch.cuda.device_count(), f"no such device {name!r}")
        return torch.device("cuda", index)
    raise CodecError(f"device {name!r} is not available to the grader")


def decode(frame: bytes | bytearray | memoryview, *,
           from_handle: Callable[[Handle], Any] | None = None,
           with_grad: bool = False, max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
    """Decode one frame made by `encode`; any malformed frame is a CodecError."""
    view = memoryview(frame)
    _check(len(view) <= max_bytes, f"frame too large ({len(view)} bytes)")
    _check(len(view) >= 8, "truncated frame")
    (header_len,) = struct.unpack("<Q", view[:8])
    _check(header_len <= min(MAX_HEADER_BYTES, len(view) - 8), "bad header length")
    try:
        header = json.loads(bytes(view[8:8 + header_len]))
    except (ValueError, RecursionError) as exc:
        raise CodecError(f"header is not valid JSON: {str(exc)[:200]}") from None
    _check(type(header) is dict and set(header) == {"tree", "buffers"}, "bad header")
    lengths = header["buffers"]
    _check(type(lengths) is list and all(type(n) is int and n >= 0 for n in lengths), "bad buffers")
    _check(8 + header_len + sum(lengths) == len(view), "frame length does not match its buffers")
    buffers, offset = [], 8 + header_len
    for n in lengths:
        buffers.append(view[offset:offset + n])
        offset += n
    try:
        return _Decoder(buffers, from_handle, with_grad).decode(header["tree"])
    except RecursionError:
        raise CodecError("frame nested too deeply") from None
