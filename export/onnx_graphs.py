"""The two ONNX graphs of a bundle, each a tiny wrapper module around the student, exported once.

Exporter: the TorchScript-based ``torch.onnx.export(..., dynamo=False)``. Measured on this
stack (torch 2.13, transformers 4.57) against the dynamo exporter on the decoder:

- it writes ORT GenAI-style hierarchical node names (``/llm/model/layers.0/self_attn/q_proj/MatMul``)
  that quantization exclusions, the Q/DQ placement check and profiles can rely on; dynamo names
  nodes ``node_MatMul_12``;
- dynamic axes are declared by name with no ``torch.export.Dim`` arithmetic (dynamo cannot express
  ``total = past + seq`` and specialises a batch of 1 in the example inputs);
- it exports the tiny decoder in ~1.5 s against ~11 s, and ORT's quantizers / transformer fusions
  are written against its op patterns (LayerNormalization at opset 17, decomposed RMSNorm).

Its one obstacle: transformers' vmap-built causal mask does not trace. The decoder wrapper builds
the 4-D additive mask itself from the 2-D ``attention_mask`` with plain ops (transformers passes a
4-D mask through untouched), which also keeps every length symbolic. ``exporter="dynamo"`` is kept
as a fallback for the day the TorchScript exporter is removed.

Graph interface (see :mod:`exo2ego_edge.bundle`): vision ``frames`` uint8 (N, H, W, 3) ->
``visual_tokens`` (N, P, D); decoder ``inputs_embeds`` + ``attention_mask`` + ``position_ids`` +
``logits_to_keep`` + ``past_key_values.{i}.key|value`` -> ``logits`` (last ``logits_to_keep``
positions) + ``present.{i}.key|value``.

Two decoders share that interface (``DecoderSpec.kv_cache``): :class:`DecoderGraph` concatenates
past and new keys in the graph ("concat"), :class:`InPlaceDecoderGraph` reads the past where the
runtime keeps it and returns only the new rows, which the runtime stores after it ("in-place": a
step copies no cache). Both are standard ONNX ops.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from exo2ego_edge.bundle import (
    BATCH, FRAMES, KEPT, KV_CACHES, LOGITS_TO_KEEP, PAST, SEQ, TOTAL, TensorSpec, past_names, present_names,
)
from exo2ego_edge.config import ModelConfig
from exo2ego_edge.errors import UserError
from exo2ego_edge.model import Exo2Ego
from exo2ego_edge.export.fused_vision import attention_function, fused_vision_kernels

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
EXPORTERS = ("torchscript", "dynamo")



@dataclass
class GraphIO:
    """Inputs and outputs of one graph as the manifest records them."""

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {
            t.name: {i: d for i, d in enumerate(t.shape) if isinstance(d, str)}
            for t in self.inputs + self.outputs
        }


# Protobuf's 2 GiB limit: larger graphs keep their weights in one external data file beside them.
EXTERNAL_DATA_BYTES = 1_800_000_000


def save_onnx(model, path: Path, keep_value_info: bool = False) -> None:
    """Save a ModelProto, moving weights to one ``<file>.data`` beside it past protobuf's limit.

    Intermediate shapes (``value_info``, which the quantizers add) are dropped unless kept: ORT
    infers them on load, and they were 5% of the tiny preset's INT8 vision graph. The quantizers
    need the exporter's: ONNX shape inference stops at contrib ops such as MultiHeadAttention.
    """
    import onnx

    if not keep_value_info:
        del model.graph.value_info[:]
    if model.ByteSize() > EXTERNAL_DATA_BYTES:
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=f"{path.name}.data", size_threshold=1024)
    else:
        onnx.save(model, str(path))


def vision_io(cfg: ModelConfig, float_dtype: str = "float32") -> GraphIO:
    s = cfg.vision.image_size
    return GraphIO(
        inputs=[TensorSpec("frames", "uint8", [FRAMES, s, s, 3])],
        outputs=[TensorSpec("visual_tokens", float_dtype, [FRAMES, cfg.tokens_per_frame, cfg.llm.hidden_size])],
    )


def decoder_io(cfg: ModelConfig, float_dtype: str = "float32", kv_cache: str = "concat") -> GraphIO:
    lc = cfg.llm
    kv_in = [BATCH, lc.num_kv_heads, PAST, lc.head_dim]
    # in-place returns the new positions only
    kv_out = [BATCH, lc.num_kv_heads, SEQ if kv_cache == "in-place" else TOTAL, lc.head_dim]
    return GraphIO(
        inputs=[
            TensorSpec("inputs_embeds", float_dtype, [BATCH, SEQ, lc.hidden_size]),
            TensorSpec("attention_mask", "int64", [BATCH, TOTAL]),
            TensorSpec("position_ids", "int64", [BATCH, SEQ]),
            TensorSpec(LOGITS_TO_KEEP, "int64", []),
            *(TensorSpec(n, float_dtype, list(kv_in)) for n in past_names(lc.num_layers)),
        ],
        outputs=[
            TensorSpec("logits", float_dtype, [BATCH, KEPT, lc.vocab_size]),
            *(TensorSpec(n, float_dtype, list(kv_out)) for n in present_names(lc.num_layers)),
        ],
    )


# --- the wrappers: one tiny module per graph (TensorRT-LLM's multimodal builder pattern) ----------
class VisionGraph(nn.Module):
    """uint8 frames (N, H, W, 3) -> visual tokens (N, P, D): normalise, ego encoder, pool, F, projector.

    Frames are the batch axis (each frame is a one-frame clip), so the graph is per frame and a
    live source encodes each new frame once.
    """

    def __init__(self, model: Exo2Ego):
        super().__init__()
        self.model = model

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.model(frames.unsqueeze(1))  # (N, 1, H, W, 3) -> (N, 1*P, D)


class DecoderGraph(nn.Module):
    """The LLM over embeddings with an explicit, flat KV cache: prefill and decode are one graph.

    ``logits_to_keep`` (int64 scalar, Hugging Face's name and meaning): the logits cover the last
    ``k`` new positions only, or all of them for ``k = 0``. The vocabulary projection is the
    largest matrix of a small LLM (151936 x 896 on edge-0.5b), so a prefill that needs one row
    must not compute hundreds.
    """

    def __init__(self, model: Exo2Ego):
        super().__init__()
        self.llm = model.llm
        self.num_layers = model.cfg.llm.num_layers

    def forward(
        self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
        logits_to_keep: torch.Tensor, *past: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        from transformers import DynamicCache

        cache = DynamicCache()
        for i in range(self.num_layers):
            cache.update(past[2 * i], past[2 * i + 1], i)  # (B, kv, past, hd) each
        out = self.llm(
            inputs_embeds=inputs_embeds, attention_mask=causal_mask(attention_mask, inputs_embeds),
            position_ids=position_ids, past_key_values=cache, use_cache=True,
            logits_to_keep=kept_positions(logits_to_keep, inputs_embeds.shape[1]),
        )
        present: list[torch.Tensor] = []
        for layer in out.past_key_values.layers:
            present += [layer.keys, layer.values]  # (B, kv, past + S, hd)
        return (out.logits, *present)


class InPlaceCache:
    """One call's cache as :class:`InPlaceDecoderGraph` hands it to each layer's attention: the
    past (B, KV, C, hd) as the runtime keeps it, and the new rows each layer returns."""

    def __init__(self, past: tuple[torch.Tensor, ...]):
        self.past = past
        self.present: list[torch.Tensor] = [None] * len(past)
        # Every layer's cache has the same length C: read once, the graph computes it once (per
        # layer it was a Shape -> Gather -> Unsqueeze chain that ONNX Runtime ran at every step).
        self.length = past[0].shape[2]


def in_place_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                       attention_mask: torch.Tensor, scaling: float, dropout: float = 0.0,
                       in_place_cache: InPlaceCache | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """:func:`grouped_query_attention` with the past and the new keys kept apart: scores against
    each are computed separately and joined (a few values per query), so the past is read where
    it lies and never concatenated with the new rows (a copy of the whole cache per step). The
    products keep :func:`grouped_query_attention`'s shapes, a few query rows against thousands of
    positions, which MLAS runs at full vector width (the cache as the left operand, a few columns
    wide, measured 2.5x slower at 4,000 positions). The new keys and values (B, KV, S, hd) are
    returned as the present, for the runtime to store."""
    layer = module.layer_idx
    past_key, past_value = in_place_cache.past[2 * layer], in_place_cache.past[2 * layer + 1]
    in_place_cache.present[2 * layer], in_place_cache.present[2 * layer + 1] = key, value
    b, heads, s, head_dim = query.shape
    groups = key.shape[1]
    q = query.reshape(b, groups, -1, head_dim) * scaling  # (B, KV, group * S, hd), scaled: see below
    scores = torch.cat([torch.matmul(q, past_key.transpose(2, 3)), torch.matmul(q, key.transpose(2, 3))], dim=-1)
    scores = scores.reshape(b, heads, s, -1) + attention_mask  # (B, H, S, C + S)
    probs = nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    probs = probs.reshape(b, groups, heads // groups * s, -1)
    past = in_place_cache.length
    out = torch.matmul(probs[..., :past], past_value) + torch.matmul(probs[..., past:], value)
    return out.reshape(b, heads, s, head_dim).transpose(1, 2).contiguous(), None


class InPlaceDecoderGraph(DecoderGraph):
    """:class:`DecoderGraph`'s inputs over an in-place cache: ``past_key_values.*`` are the
    runtime's cache buffers (B, KV, C, hd) as they are, with room past the filled positions that
    ``attention_mask`` marks 0 (its width is C + S); ``present.*`` are only this call's
    (B, KV, S, hd), which the runtime stores after the filled ones."""

    def forward(
        self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
        logits_to_keep: torch.Tensor, *past: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        cache = InPlaceCache(past)
        out = self.llm(
            inputs_embeds=inputs_embeds, position_ids=position_ids, use_cache=False, in_place_cache=cache,
            attention_mask={"full_attention": causal_mask(attention_mask, inputs_embeds)},
            logits_to_keep=kept_positions(logits_to_keep, inputs_embeds.shape[1]),
        )
        return (out.logits, *cache.present)


EXPORT_ATTENTION = "exo2ego_grouped"  # transformers attention-interface name used while exporting
IN_PLACE_ATTENTION = "exo2ego_in_place"


def grouped_query_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                            attention_mask: torch.Tensor | None, scaling: float, dropout: float = 0.0,
                            **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention as exported: each KV head serves its group of query heads through a reshape of the
    *queries*, so the KV cache is read where it lies.

    transformers' eager and SDPA paths (with a mask) first expand K and V to every query head
    (``repeat_kv``): in the graph, an Expand + Reshape that copies the whole cache of every layer on
    every decode step (7x the cache on Qwen2-0.5B's 14 query / 2 KV heads). Query head
    ``h = g * group + r`` belongs to KV head ``g`` (``repeat_kv``'s order), which is exactly what
    viewing (B, H, S, hd) as (B, KV, group * S, hd) gives. Eager attention's arithmetic, softmax in
    float32, but the queries are scaled before the product instead of the scores after it: one
    multiply over S x hd values instead of S x T (a prefill's scores are the larger by far), and
    the same result where the scale is a power of two (1/8 for 64-wide heads).
    """
    b, heads, _, head_dim = query.shape
    groups = key.shape[1]
    q = query.reshape(b, groups, -1, head_dim) * scaling  # (B, KV, group * S, hd)
    scores = torch.matmul(q, key.transpose(2, 3))  # (B, KV, group * S, T)
    scores = scores.reshape(b, heads, -1, key.shape[2])  # (B, H, S, T)
    if attention_mask is not None:
        scores = scores + attention_mask[:, :, :, : key.shape[2]]
    probs = nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    out = torch.matmul(probs.reshape(b, groups, -1, key.shape[2]), value)  # (B, KV, group * S, hd)
    return out.reshape(b, heads, -1, head_dim).transpose(1, 2).contiguous(), probs


class PatchEmbeddingMatMul(nn.Module):
    """A ViT's patch embedding (a p x p Conv2d with stride p, no padding) as patchify + one MatMul.

    Same output (N, D, g, g), but a weight MatMul: ORT's dynamic INT8 quantizer converts MatMuls
    and leaves Conv in float32, and the patch embedding was the largest float tensor of the tiny
    preset's INT8 vision graph (295 of its 540 KB).
    """

    def __init__(self, conv: nn.Conv2d, image_size: int):
        super().__init__()
        self.p, self.grid = conv.kernel_size[0], image_size // conv.kernel_size[0]
        # (C*p*p, D), rows in the conv's (c, i, j) order
        self.weight = nn.Parameter(conv.weight.detach().flatten(1).t().contiguous(), requires_grad=False)
        self.bias = conv.bias

    @staticmethod
    def applies_to(conv: nn.Module) -> bool:
        return (isinstance(conv, nn.Conv2d) and conv.kernel_size[0] == conv.kernel_size[1] == conv.stride[0]
                == conv.stride[1] and conv.groups == 1 and conv.dilation == (1, 1)
                and conv.padding in ((0, 0), "valid"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, g, p = x.shape[1], self.grid, self.p
        patches = x.reshape(-1, c, g, p, g, p).permute(0, 2, 4, 1, 3, 5).reshape(-1, g * g, c * p * p)
        out = patches @ self.weight
        if self.bias is not None:
            out = out + self.bias
        return out.transpose(1, 2).reshape(-1, self.weight.shape[1], g, g)


@contextlib.contextmanager
def patch_embeddings_as_matmul(encoder: nn.Module) -> Iterator[None]:
    """Swap every ``patch_embedding`` conv under ``encoder`` for :class:`PatchEmbeddingMatMul`."""
    swapped = []
    image_size = encoder.tower.config.image_size
    for module in encoder.modules():
        conv = getattr(module, "patch_embedding", None)
        if PatchEmbeddingMatMul.applies_to(conv):
            module.patch_embedding = PatchEmbeddingMatMul(conv, image_size)
            swapped.append((module, conv))
    try:
        yield
    finally:
        for module, conv in swapped:
            module.patch_embedding = conv


def export_attention(llm: nn.Module, kv_cache: str = "concat") -> contextlib.AbstractContextManager[None]:
    """Run ``llm``'s attention through :func:`grouped_query_attention` ("concat") or
    :func:`in_place_attention` ("in-place") inside the block."""
    if kv_cache == "in-place":
        return attention_function(llm, IN_PLACE_ATTENTION, in_place_attention)
    return attention_function(llm, EXPORT_ATTENTION, grouped_query_attention)


def kept_positions(logits_to_keep: torch.Tensor, seq: int) -> torch.Tensor:
    """Indices of the last ``logits_to_keep`` of ``seq`` positions (all of them for k <= 0 or
    k >= seq). Built with tensor ops so the count stays a run-time value in the graph;
    transformers takes a tensor ``logits_to_keep`` as these indices."""
    seq_t = torch.tensor(seq, dtype=torch.long)
    k = torch.where((logits_to_keep > 0) & (logits_to_keep < seq_t), logits_to_keep, seq_t)
    return torch.arange(k) + (seq_t - k)


def causal_mask(attention_mask: torch.Tensor, inputs_embeds: torch.Tensor) -> torch.Tensor:
    """2-D padding mask (B, total) -> 4-D additive mask (B, 1, S, total), causal over the new tokens.

    Query i (of the S new tokens) sits at cache slot past + i and may see keys 0..past + i that are
    not padding. Built from shapes at run time, so no length is baked into the graph.
    """
    s, total = inputs_embeds.shape[1], attention_mask.shape[1]
    keys = torch.arange(total, device=inputs_embeds.device)
    queries = torch.arange(s, device=inputs_embeds.device) + (total - s)
    allowed = (keys[None, :] <= queries[:, None])[None, None] & attention_mask[:, None, None, :].bool()
    # finfo.min, not -inf: a fully padded row then softmaxes to uniform instead of NaN.
    blocked = torch.tensor(torch.finfo(inputs_embeds.dtype).min, dtype=inputs_embeds.dtype)
    return torch.where(allowed, torch.zeros((), dtype=inputs_embeds.dtype), blocked)


# --- example inputs and export ----------------------------------------------------------------
def vision_example(cfg: ModelConfig, frames: int = 2) -> tuple[torch.Tensor, ...]:
    s = cfg.vision.image_size
    g = torch.Generator().manual_seed(0)
    return (torch.randint(0, 256, (frames, s, s, 3), dtype=torch.uint8, generator=g),)


def decoder_example(cfg: ModelConfig, batch: int = 2, seq: int = 5, past: int = 3,
                    logits_to_keep: int = 4) -> tuple[torch.Tensor, ...]:
    # batch 2, past != seq, keep 4: no axis length coincides with another, so none is specialised.
    lc = cfg.llm
    g = torch.Generator().manual_seed(0)
    kv = [torch.randn(batch, lc.num_kv_heads, past, lc.head_dim, generator=g) for _ in range(2 * lc.num_layers)]
    return (
        torch.randn(batch, seq, lc.hidden_size, generator=g),
        torch.ones(batch, past + seq, dtype=torch.long),
        torch.arange(past, past + seq).expand(batch, -1).contiguous(),
        torch.tensor(logits_to_keep, dtype=torch.long),
        *kv,
    )


# graph_passes' probes: every dynamic length differs between them, and they include one and several
# rows, an empty and a filled cache, every position's logits (0) and some.
PROBE_FRAMES = (1, 2, 3)
PROBE_DECODER = ((1, 1, 6, 1), (2, 5, 3, 4), (1, 7, 0, 0), (3, 2, 9, 2))  # batch, seq, past, logits_to_keep


def probe_feeds(cfg: ModelConfig, graph: str) -> list[dict[str, np.ndarray]]:
    """Example inputs of ``graph`` ("vision" or "decoder") at several lengths, for graph_passes."""
    if graph == "vision":
        names, examples = vision_io(cfg).input_names, [vision_example(cfg, f) for f in PROBE_FRAMES]
    else:
        names, examples = decoder_io(cfg).input_names, [decoder_example(cfg, *p) for p in PROBE_DECODER]
    return [{n: t.numpy() for n, t in zip(names, ex)} for ex in examples]


def _export(
    module: nn.Module, args: tuple[torch.Tensor, ...], io: GraphIO, path: Path, opset: int, exporter: str,
) -> None:
    if exporter not in EXPORTERS:
        raise UserError(f"unknown exporter '{exporter}'; choose one of: {', '.join(EXPORTERS)}")
    module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning)
        if exporter == "torchscript":
            torch.onnx.export(
                module, args, str(path), input_names=io.input_names, output_names=io.output_names,
                dynamic_axes=io.dynamic_axes(), opset_version=opset, dynamo=False,
                do_constant_folding=True,
            )
        else:
            _export_dynamo(module, args, io, path, opset)
    _check_dynamic(path, io)


def _export_dynamo(module: nn.Module, args: tuple[torch.Tensor, ...], io: GraphIO, path: Path, opset: int) -> None:
    from torch.export import Dim

    dims: dict[str, Dim] = {}

    def dim(name: str) -> Dim:
        return dims.setdefault(name, Dim(name, min=0 if name == PAST else 1, max=1 << 16))

    spec = [{i: dim(d) for i, d in enumerate(t.shape) if isinstance(d, str)} for t in io.inputs]
    shapes: tuple = tuple(spec) if len(spec) == len(args) else (*spec[:4], tuple(spec[4:]))
    program = torch.onnx.export(
        module, args, input_names=io.input_names, output_names=io.output_names,
        dynamic_shapes=shapes, opset_version=opset, dynamo=True, external_data=False,
    )
    program.save(str(path))


def _check_dynamic(path: Path, io: GraphIO) -> None:
    """Refuse a graph whose declared dynamic axes came out fixed (a shape-specialised export)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    for value in list(graph.input) + list(graph.output):
        want = next((t for t in io.inputs + io.outputs if t.name == value.name), None)
        if want is None:
            continue
        dims = value.type.tensor_type.shape.dim
        for i, d in enumerate(want.shape):
            if isinstance(d, str) and dims[i].HasField("dim_value"):
                raise UserError(f"{path.name}: axis {i} of '{value.name}' was exported as fixed {dims[i].dim_value}")


def export_vision(model: Exo2Ego, path: str | Path, opset: int = DEFAULT_OPSET, exporter: str = "torchscript",
                  fused: bool = False) -> GraphIO:
    """``fused``: the tower's attention and activation as ONNX Runtime kernels (fused_vision.py)."""
    if fused and exporter != "torchscript":
        raise UserError("the fused vision kernels are exported with the torchscript exporter")
    io = vision_io(model.cfg)
    fusing = fused_vision_kernels(model.ego_encoder.tower) if fused else contextlib.nullcontext()
    with patch_embeddings_as_matmul(model.ego_encoder), fusing:
        _export(VisionGraph(model), vision_example(model.cfg), io, Path(path), opset, exporter)
    log.info("wrote %s", path)
    return io


def export_decoder(model: Exo2Ego, path: str | Path, opset: int = DEFAULT_OPSET, exporter: str = "torchscript",
                   kv_cache: str = "concat") -> GraphIO:
    if kv_cache not in KV_CACHES:
        raise UserError(f"unknown KV cache '{kv_cache}'; choose one of: {', '.join(KV_CACHES)}")
    if kv_cache == "in-place" and exporter != "torchscript":
        raise UserError("the in-place KV cache is exported with the torchscript exporter")
    io = decoder_io(model.cfg, kv_cache=kv_cache)
    graph = InPlaceDecoderGraph(model) if kv_cache == "in-place" else DecoderGraph(model)
    with export_attention(model.llm, kv_cache):
        _export(graph, decoder_example(model.cfg), io, Path(path), opset, exporter)
    log.info("wrote %s", path)
    return io


def embedding_table(model: Exo2Ego) -> np.ndarray:
    """The LLM's input token-embedding table (V, D) in float32: the runtime gathers prompt rows from it."""
    return model.llm.get_input_embeddings().weight.detach().to(torch.float32).numpy()


def rotary_tables(model: Exo2Ego, positions: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The LLM's rotary cos and sin for positions 0 .. ``positions`` - 1 as ONNX Runtime's
    RotaryEmbedding reads them, (positions, head_dim / 2) float32 each; None for a model whose
    tables are not the usual two repeated halves (graph_passes then leaves its rotary as exported)."""
    rotary = getattr(getattr(model.llm, "model", None), "rotary_emb", None)
    if rotary is None:
        return None
    ids = torch.arange(positions)[None]
    cos, sin = (t[0].to(torch.float32).numpy() for t in rotary(torch.zeros(1, dtype=torch.float32), ids))
    half = cos.shape[-1] // 2
    if not (np.array_equal(cos[:, :half], cos[:, half:]) and np.array_equal(sin[:, :half], sin[:, half:])):
        return None
    return np.ascontiguousarray(cos[:, :half]), np.ascontiguousarray(sin[:, :half])


def keep_last_logits(src: Path, dst: Path) -> bool:
    """Write ``src`` to ``dst`` with the ``logits_to_keep`` input replaced by the constant 1.

    TensorRT would take that scalar, which sizes an output, as a shape tensor needing a profile
    of its own, and the runtime reads only the last position's logits; as a constant it is folded
    and the engine projects one row onto the vocabulary. External weights are referenced, not
    copied, so ``dst`` must be in ``src``'s folder. False (nothing written) for a graph without
    the input.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src), load_external_data=False)
    inputs = [i for i in model.graph.input if i.name != LOGITS_TO_KEEP]
    if len(inputs) == len(model.graph.input):
        return False
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    model.graph.initializer.append(numpy_helper.from_array(np.array(1, dtype=np.int64), LOGITS_TO_KEEP))
    onnx.save(model, str(dst))
    return True
