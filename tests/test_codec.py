"""The wire format: every allowed type round-trips, anything else is refused."""

import json
import math
import pickle
import struct

import numpy as np
import pytest
import torch

from grader.worker import codec
from grader.worker.codec import CodecError, Handle, decode, encode


def roundtrip(value, **kwargs):
    return decode(encode(value, **kwargs), **kwargs)


@pytest.mark.parametrize("value", [
    None, True, False, 0, -7, 2**80, 1.5, -0.0, "", "héllo ✓ 日本", b"", b"\x00\xff\x10",
    [], [1, [2, [3]]], (), (1, "a", None), {}, {"a": 1}, {1: "one", 2: "two"},
    {(1, "x"): [b"k"]}, {b"ab": 3, None: 4}, torch.float32, torch.bfloat16, torch.device("cpu"),
])
def test_plain_values_round_trip(value):
    assert roundtrip(value) == value
    assert type(roundtrip(value)) is type(value)


def test_special_floats_round_trip():
    out = roundtrip([math.inf, -math.inf, math.nan])
    assert out[0] == math.inf and out[1] == -math.inf and math.isnan(out[2])


@pytest.mark.parametrize("dtype", list(codec.DTYPES.values()))
def test_tensors_of_every_dtype_round_trip(dtype):
    t = (torch.arange(24).reshape(2, 3, 4) % 5).to(dtype)
    out = roundtrip(t)
    assert out.dtype == dtype and out.shape == t.shape and torch.equal(out, t)


@pytest.mark.parametrize("t", [
    torch.tensor(3.5), torch.empty(0, 3), torch.arange(12.).reshape(3, 4).T,
    torch.arange(10)[::3], torch.randn(3, dtype=torch.complex64).conj(),
    torch.nn.Parameter(torch.ones(2)), torch.tensor([1.0, 2.0]).to_sparse(),
])
def test_unusual_tensors_round_trip_as_plain_tensors(t):
    out = roundtrip(t)
    expected = t.detach().to_dense() if t.layout != torch.strided else t.detach().resolve_conj()
    assert type(out) is torch.Tensor and torch.equal(out, expected)


def test_numpy_values():
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = roundtrip({"a": array, "s": np.float64(2.5), "i": np.int64(3)})
    assert isinstance(out["a"], np.ndarray) and np.array_equal(out["a"], array)
    assert out["s"] == 2.5 and type(out["s"]) is float and out["i"] == 3 and type(out["i"]) is int


def test_generator_state_round_trips():
    gen = torch.Generator().manual_seed(5)
    torch.rand(3, generator=gen)
    copy = roundtrip(gen)
    assert torch.equal(torch.rand(4, generator=copy), torch.rand(4, generator=gen))


def test_requires_grad_only_when_asked():
    t = torch.ones(2, requires_grad=True)
    assert not decode(encode(t, with_grad=True)).requires_grad
    assert decode(encode(t, with_grad=True), with_grad=True).requires_grad


def test_handles_pass_through_hooks():
    objects = {7: object()}
    frame = encode([Handle(7, "Thing", True)])
    assert decode(frame) == [Handle(7, "Thing", True)]
    assert decode(frame, from_handle=lambda h: objects[h.id]) == [objects[7]]
    made = []
    frame = encode({"x": object()}, to_handle=lambda o: made.append(o) or Handle(1, "object"))
    assert decode(frame) == {"x": Handle(1, "object", False)} and len(made) == 1


@pytest.mark.parametrize("value", [object(), {1, 2}, lambda: 0, torch.nn.Linear(2, 2), pytest,
                                   np.array([object()]), torch.empty(2, device="meta")])
def test_anything_else_is_refused(value):
    with pytest.raises(CodecError):
        encode(value)


def test_size_cap_on_encode_and_decode():
    big = torch.zeros(1024, dtype=torch.uint8)
    with pytest.raises(CodecError, match="too large"):
        encode(big, max_bytes=1000)
    frame = encode(big)
    with pytest.raises(CodecError, match="too large"):
        decode(frame, max_bytes=1000)


def test_nesting_cap():
    deep = []
    for _ in range(codec.MAX_DEPTH + 5):
        deep = [deep]
    with pytest.raises(CodecError, match="deeper"):
        encode(deep)


def frame_of(tree, buffers=()):
    header = json.dumps({"tree": tree, "buffers": [len(b) for b in buffers]}).encode()
    return struct.pack("<Q", len(header)) + header + b"".join(buffers)


def raw_frame(header: bytes) -> bytes:
    return struct.pack("<Q", len(header)) + header


@pytest.mark.parametrize("frame", [
    b"",
    b"\x01\x00",
    pickle.dumps({"score": 100}),                       # a pickle is never a frame
    struct.pack("<Q", 10**12) + b"{}",                  # header length beyond the frame
    struct.pack("<Q", 3) + b"{x}",                      # not JSON
    frame_of(None)[:-1],                                # truncated
    frame_of({"$pickle": "gASV"}),                      # unknown tag
    frame_of({"$tensor": 0, "dtype": "object", "shape": [1]}, [b"\x00" * 8]),
    frame_of({"$tensor": 0, "dtype": "float32", "shape": [3]}, [b"\x00" * 8]),   # shape vs data
    frame_of({"$tensor": 0, "dtype": "float32", "shape": [-1]}, [b""]),
    frame_of({"$tensor": 5, "dtype": "float32", "shape": [0]}),                  # no such buffer
    frame_of({"$tensor": 0, "dtype": "float32", "shape": [1], "device": "tpu"}, [b"\x00" * 4]),
    frame_of({"$tensor": 0, "dtype": "float32", "shape": [1], "code": "x"}, [b"\x00" * 4]),
    frame_of({"$dict": [[[1], 2]]}),                    # unhashable key
    frame_of({"$dict": [[1]]}),
    frame_of({"$generator": {"device": "cpu", "state": 3}}),
    frame_of({"$handle": "1"}),
    frame_of({"$dtype": "torch.Tensor"}),
    raw_frame(b'{"tree": ' + b"[" * 5000 + b"]" * 5000 + b', "buffers": []}'),   # too deep
])
def test_malformed_frames_are_refused(frame):
    with pytest.raises(CodecError):
        decode(frame)
