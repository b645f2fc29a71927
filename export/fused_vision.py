"""The vision tower's attention and activation as ONNX Runtime's fused CPU kernels.

Exported with standard ops, a ViT layer's attention is Reshape / Transpose / MatMul / Softmax /
MatMul / Transpose over every head, and SigLIP's tanh GELU is nine elementwise passes over the
MLP's widest activation (torch's opset-17 decomposition, which ORT's FastGelu fusion does not
match). ORT profiles of edge-0.5b's INT8 vision graph (8 frames, 2 threads) put those ops at about
40% of the graph's kernel time, beside INT8 GEMMs they do not need to wait for. Inside
:func:`fused_vision_kernels` the tower exports them as ``com.microsoft`` ``MultiHeadAttention``
and ``FastGelu`` / ``QuickGelu`` instead: ORT's CPU provider (and CUDA's) run each as one kernel.

Only for bundles ONNX Runtime's CPU provider runs (``--target cpu``): TensorRT's ONNX parser does
not know ``com.microsoft`` ops and fuses the standard patterns itself. The traced arithmetic is
the tower's own (scaled-dot-product attention, the same GELU), so the parity gate judges the
fused graph against the same PyTorch reference.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn import functional as F

ORT_DOMAIN = "com.microsoft"
FUSED_ATTENTION = "exo2ego_ort_mha"  # transformers attention-interface name used while exporting
QUICK_GELU_ALPHA = 1.702  # transformers' quick_gelu: x * sigmoid(1.702 x)


def _typed_like(out, like):
    """The exporter has no shape inference for ``com.microsoft`` ops: each output here has its
    first input's type and shape."""
    out.setType(like.type())
    return out


class _MultiHeadAttention(torch.autograd.Function):
    """Unmasked attention over (B, S, heads * hd) queries, keys and values -> (B, S, heads * hd)."""

    @staticmethod
    def forward(ctx, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, heads: int, scale: float):
        b, s, width = query.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, t.shape[1], heads, width // heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(query), split(key), split(value), scale=scale)
        return out.transpose(1, 2).reshape(b, s, width)

    @staticmethod
    def symbolic(g, query, key, value, heads: int, scale: float):
        return _typed_like(g.op(f"{ORT_DOMAIN}::MultiHeadAttention", query, key, value, num_heads_i=heads,
                                scale_f=scale), query)


def fused_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    attention_mask: torch.Tensor | None, scaling: float, dropout: float = 0.0,
                    **kwargs) -> tuple[torch.Tensor, None]:
    """A transformers attention function for (B, H, S, hd) inputs with no mask (a vision tower's):
    one ``MultiHeadAttention`` node. The transposes into its (B, S, H * hd) layout undo the
    tower's own, and ORT's optimizer removes both pairs."""
    if attention_mask is not None:
        raise ValueError("the fused vision attention takes no mask")
    b, _, s, head_dim = query.shape
    heads = module.num_heads  # a Python int: a traced shape would reach the symbolic as a graph value

    def merge(t: torch.Tensor) -> torch.Tensor:
        return t.transpose(1, 2).reshape(b, t.shape[2], heads * head_dim)

    out = _MultiHeadAttention.apply(merge(query), merge(key), merge(value), heads, float(scaling))
    return out.reshape(b, s, heads, head_dim), None


class _FastGelu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x, approximate="tanh")

    @staticmethod
    def symbolic(g, x):
        return _typed_like(g.op(f"{ORT_DOMAIN}::FastGelu", x), x)


class _QuickGelu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(QUICK_GELU_ALPHA * x)

    @staticmethod
    def symbolic(g, x):
        return _typed_like(g.op(f"{ORT_DOMAIN}::QuickGelu", x, alpha_f=QUICK_GELU_ALPHA), x)


class FusedActivation(nn.Module):
    def __init__(self, function: type[torch.autograd.Function]):
        super().__init__()
        self.function = function

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.function.apply(x)


# transformers' hidden_act names -> the ORT kernel computing the same function
FUSED_ACTIVATIONS = {"gelu_pytorch_tanh": _FastGelu, "gelu_new": _FastGelu, "quick_gelu": _QuickGelu}


@contextlib.contextmanager
def attention_function(model: nn.Module, name: str, function) -> Iterator[None]:
    """Inside the block, ``model`` (a transformers model) runs its attention through ``function``,
    registered in transformers' attention interface as ``name``. Shared with the decoder's export
    (:func:`~exo2ego_edge.export.onnx_graphs.export_attention`)."""
    from transformers import AttentionInterface

    AttentionInterface.register(name, function)
    before = model.config._attn_implementation
    model.config._attn_implementation = name
    try:
        yield
    finally:
        model.config._attn_implementation = before


@contextlib.contextmanager
def fused_vision_kernels(tower: nn.Module) -> Iterator[None]:
    """Inside the block, ``tower`` (a transformers SigLIP / CLIP vision model) runs its attention
    through :func:`fused_attention` and its MLP activation through a :class:`FusedActivation`
    when its ``hidden_act`` has an ORT kernel."""
    function = FUSED_ACTIVATIONS.get(tower.config.hidden_act)
    swapped = []
    if function is not None:
        for module in tower.modules():
            if hasattr(module, "activation_fn"):
                swapped.append((module, module.activation_fn))
                module.activation_fn = FusedActivation(function)
    try:
        with attention_function(tower, FUSED_ATTENTION, fused_attention):
            yield
    finally:
        for module, activation in swapped:
            module.activation_fn = activation
