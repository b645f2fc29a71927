"""The export layer: student checkpoint -> bundle (ONNX graphs, INT8/FP16/INT4, TensorRT engines).

Entry point: :func:`exo2ego_edge.export.pipeline.export_bundle` (the CLI's ``exo2ego-edge export``).
Modules, in pipeline order:

- ``onnx_graphs``: the vision / decoder wrapper modules and their ONNX export;
- ``quantize``: ORT dynamic / static / Q/DQ INT8, MatMulNBits INT8/INT4, FP16, Q/DQ placement check;
- ``ort_offline``: ``--target cpu`` graphs saved as ONNX Runtime's CPU provider optimizes them;
- ``clip_frames``: ego frames for calibration and parity from clip JSONL rows (the runtime's decoder);
- ``runtime.engines`` (``--trt``): TensorRT 10 engines, the same builder the device runs;
- ``bundle_writer``: manifest, checksums, provenance;
- ``parity``: the parity gate, run through the runtime (``exo2ego_edge.runtime``);
- ``inspect_bundle``: ``export inspect``'s table.

Importing this package imports nothing heavy; torch is loaded by the modules that need it.
"""

from typing import Any

_LAZY = {"export_bundle": "pipeline", "ExportOptions": "pipeline", "ExportResult": "pipeline"}


def __getattr__(name: str) -> Any:
    """``from exo2ego_edge.export import export_bundle`` without importing torch at package import."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
