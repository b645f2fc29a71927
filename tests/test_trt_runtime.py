"""The TensorRT backend's buffer and binding logic, on stand-ins for pycuda and an execution
context (TensorRT itself cannot run here): what each call binds, where, and what comes back."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from exo2ego_edge.runtime.errors import BackendError
from exo2ego_edge.runtime.trt_backend import TrtDecoder, TrtVision, _Device, _Graph

VOCAB, HIDDEN, HEADS, HEAD_DIM, LAYERS, MAX_SEQ = 11, 8, 2, 4, 1, 16
STREAM = SimpleNamespace(handle=0, synchronize=lambda: None)
MANIFEST = SimpleNamespace(decoder=SimpleNamespace(max_seq=MAX_SEQ, vocab_size=VOCAB, num_kv_heads=HEADS,
                                                   head_dim=HEAD_DIM, num_layers=LAYERS, hidden_size=HIDDEN))


class FakeCuda:
    """Device memory as numbered byte arrays at 256-byte-aligned addresses (as cudaMalloc gives)."""

    def __init__(self):
        self.blocks: dict[int, bytearray] = {}
        self.next = 1 << 20

    def mem_alloc(self, nbytes):
        addr, self.next = self.next, self.next + ((nbytes + 255) // 256 + 1) * 256
        self.blocks[addr] = bytearray(nbytes)
        return _Ptr(addr)

    def pagelocked_empty(self, shape, dtype):
        return np.zeros(shape, dtype)

    def _at(self, addr):
        base = max(b for b in self.blocks if b <= addr)
        return self.blocks[base], addr - base

    def memcpy_htod(self, dst, src):
        block, off = self._at(int(dst))
        raw = np.ascontiguousarray(src).tobytes()
        block[off:off + len(raw)] = raw

    def memcpy_htod_async(self, dst, src, stream):
        self.memcpy_htod(dst, src)

    def memcpy_dtoh_async(self, dst, src, stream):
        block, off = self._at(int(src))
        dst[...] = np.frombuffer(bytes(block[off:off + dst.nbytes]), dst.dtype).reshape(dst.shape)

    def read(self, addr, dtype, count):
        block, off = self._at(addr)
        return np.frombuffer(bytes(block[off:off + count * np.dtype(dtype).itemsize]), dtype)


class _Ptr:
    def __init__(self, addr):
        self.addr = addr

    def __int__(self):
        return self.addr


class FakeContext:
    """Records shapes and addresses; "runs" the decoder by writing the last position id into
    logits[0] of the row it computes, and the vision graph by summing each frame."""

    def __init__(self, cuda, decoder: bool, max_frames: int = 4):
        self.cuda, self.decoder, self.max_frames = cuda, decoder, max_frames
        self.shapes, self.addresses, self.seen_positions = {}, {}, []

    def set_input_shape(self, name, shape):
        if not self.decoder and shape[0] > self.max_frames:
            return False
        self.shapes[name] = tuple(shape)
        return True

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = ptr
        return ptr % 256 == 0  # TensorRT's alignment rule

    def get_tensor_shape(self, name):
        return (1, 1, VOCAB) if self.decoder else (self.shapes["frames"][0], 2, 3)

    def execute_async_v3(self, handle):
        if self.decoder:
            s = self.shapes["position_ids"][1]
            positions = self.cuda.read(self.addresses["position_ids"], np.int64, s)
            self.seen_positions.append(positions.tolist())
            self.cuda.memcpy_htod(_Ptr(self.addresses["logits"]), np.full(VOCAB, positions[-1], np.float32))
        else:
            n = self.shapes["frames"][0]
            frames = self.cuda.read(self.addresses["frames"], np.uint8, n * 2 * 2 * 3).reshape(n, -1)
            out = np.repeat(frames.sum(1, dtype=np.float32)[:, None, None], 6, axis=1).reshape(n, 2, 3)
            self.cuda.memcpy_htod(_Ptr(self.addresses["visual"]), out)
        return True


def _graph(context, dtypes, inputs) -> _Graph:
    g = _Graph.__new__(_Graph)  # the engine itself needs TensorRT: only its context is faked
    g.context, g.dtypes, g.inputs = context, {k: np.dtype(v) for k, v in dtypes.items()}, set(inputs)
    return g


def _decoder(cuda):
    past = [f"past_key_values.0.{kv}" for kv in ("key", "value")]
    present = [f"present.0.{kv}" for kv in ("key", "value")]
    dtypes = {"inputs_embeds": "float32", "attention_mask": "int64", "position_ids": "int64", "logits": "float32",
              **{n: "float16" for n in past + present}}
    ctx = FakeContext(cuda, decoder=True)
    graph = _graph(ctx, dtypes, ["inputs_embeds", "attention_mask", "position_ids", *past])
    return TrtDecoder(graph, STREAM, _Device(cuda), MANIFEST), ctx


def test_decoder_binds_aligned_positions_that_continue_the_prefix():
    cuda = FakeCuda()
    decoder, ctx = _decoder(cuda)
    prefix, logits = decoder.extend(None, np.ones((5, HIDDEN), np.float32))
    assert prefix.length == 5 and logits[0] == 4  # the last position's row came back
    state = decoder.start(prefix)
    assert decoder.step(state, np.ones((1, HIDDEN), np.float32))[0] == 5
    assert decoder.step(state, np.ones((1, HIDDEN), np.float32))[0] == 6
    assert ctx.seen_positions == [[0, 1, 2, 3, 4], [5], [6]]
    assert ctx.shapes["attention_mask"] == (1, 7) and ctx.shapes["past_key_values.0.key"] == (1, HEADS, 6, HEAD_DIM)
    assert all(int(a) % 256 == 0 for a in ctx.addresses.values())


def test_decoder_refuses_an_engine_whose_positions_are_not_int64():
    cuda = FakeCuda()
    decoder, ctx = _decoder(cuda)
    decoder.g.dtypes["position_ids"] = np.dtype("int32")
    with pytest.raises(BackendError, match="position_ids is int32 in this engine, int64 expected"):
        TrtDecoder(decoder.g, STREAM, decoder.dev, MANIFEST)


def test_vision_encodes_and_a_frame_count_outside_the_profile_is_one_line():
    cuda = FakeCuda()
    ctx = FakeContext(cuda, decoder=False, max_frames=4)
    vision = TrtVision(_graph(ctx, {"frames": "uint8", "visual": "float32"}, ["frames"]),
                       STREAM, _Device(cuda), "frames", "visual")
    frames = np.arange(3 * 2 * 2 * 3, dtype=np.uint8).reshape(3, 2, 2, 3)
    out = vision.encode(frames)
    assert out.shape == (3, 2, 3) and np.allclose(out[:, 0, 0], frames.reshape(3, -1).sum(1))
    with pytest.raises(BackendError, match=r"frames: shape \(5, 2, 2, 3\) is outside the engine's optimization profile"):
        vision.encode(np.zeros((5, 2, 2, 3), np.uint8))
