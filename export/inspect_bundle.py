"""``export inspect``: a bundle's manifest as a readable table (graphs, sizes, parity, provenance).

Reads only the manifest and file sizes (no torch), and reports whether the checksums still match
instead of refusing, so a tampered bundle can still be looked at.
"""

from __future__ import annotations

from pathlib import Path

from exo2ego_edge.bundle import BundleError, read_manifest, verify_files


def _mb(path: Path) -> str:
    return f"{path.stat().st_size / 1e6:.2f}" if path.is_file() else "missing"


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def format_manifest(folder: str | Path) -> str:
    return inspect_bundle(folder)[0]


def inspect_bundle(folder: str | Path) -> tuple[str, str | None]:
    """The manifest as a table, and why the bundle's files fail their sha256 check (None: intact)."""
    folder = Path(folder)
    m = read_manifest(folder)
    try:
        verify_files(folder, m)
        problem, integrity = None, "ok (every sha256 matches)"
    except BundleError as e:
        problem = str(e)
        integrity = f"FAILED: {problem}"
    v, llm = m.model.vision, m.model.llm
    lines = [
        f"bundle     {folder}",
        f"format     {m.format} v{m.format_version}",
        f"model      {m.model.name}: vision {v.family} {v.image_size}px, "
        f"LLM {llm.family} {llm.num_layers}x{llm.hidden_size}, vocab {llm.vocab_size}",
        f"frames     {m.preprocessing.num_frames} x {m.preprocessing.image_size}px -> {m.decoder.tokens_per_frame} tokens/frame;"
        f" max frames {m.decoder.max_frames}, max sequence {m.decoder.max_seq}",
        f"integrity  {integrity}",
        f"requires   {', '.join(f'{k} {v}' for k, v in m.requires.items()) or 'nothing recorded (format 2)'}",
        "",
    ]
    rows = [["graph", "file", "precision", "opset", "MB", "inputs"]]
    for name, g in m.graphs.items():
        data = folder / f"{g.file}.data"
        size = _mb(folder / g.file) + (f" (+{_mb(data)} data)" if data.is_file() else "")
        ins = ", ".join(f"{t.name}{list(t.shape)}" for t in g.inputs[:3]) + (f", +{len(g.inputs) - 3} cache" if len(g.inputs) > 3 else "")
        rows.append([name, g.file, g.precision, str(g.opset), size, ins])
    for label, t in (("embeddings", m.embeddings), ("embedding scales", m.embedding_scales)):
        if t is not None:
            rows.append([label, t.name, t.dtype, "-", _mb(folder / t.name), str(t.shape)])
    rows.append(["tokenizer", m.tokenizer, "-", "-", _mb(folder / m.tokenizer), "-"])
    for e in m.engines:
        rows.append([f"engine:{e.graph}", e.file, e.precision, "-", _mb(folder / e.file),
                     f"TensorRT {e.tensorrt_version}, sm {e.compute_capability} {e.gpu_name}"])
    lines += _table(rows)
    total = sum((folder / f).stat().st_size for f in m.files if (folder / f).is_file())
    lines.append(f"total      {total / 1e6:.2f} MB in {len(m.files)} files")
    lines.append("")
    p = m.parity
    if p:
        status = "PASSED" if p.get("passed") else "FAILED (kept with --force)"
        lines.append(f"parity     {status} on {p.get('clips')} clips from {p.get('source')}")
        lines.append(
            f"           visual cosine mean {p.get('visual_cosine_mean', float('nan')):.6f} min {p.get('visual_cosine_min', float('nan')):.6f};"
            f" logits max |err| {p.get('logits_max_abs', float('nan')):.3g};"
            f" greedy agreement {p.get('token_agreement', float('nan')):.1%} of {p.get('tokens_compared')} tokens;"
            f" identical answers on {p.get('exact_sequences')} of {p.get('clips')} clips"
        )
        for failure in p.get("failures", []):
            lines.append(f"           failed: {failure}")
    else:
        lines.append("parity     not measured")
    pv = m.provenance
    if pv:
        libs = ", ".join(f"{k} {v}" for k, v in pv.get("libraries", {}).items())
        level = pv.get("ort_graph_optimization")
        lines += [
            f"exporter   {pv.get('exporter')} via {pv.get('onnx_exporter')}, opset {pv.get('opset')}, {pv.get('created')}",
            f"scheme     {_scheme(pv.get('options', {}))}",
            "graphs     " + (f"ONNX Runtime-optimized for CPU ({level} level)" if level else "as exported"),
            f"checkpoint {pv.get('checkpoint')} (sha256 {str(pv.get('checkpoint_sha256'))[:16]}...)",
            f"libraries  {libs}",
        ]
    return "\n".join(lines), problem


def _scheme(o: dict) -> str:
    """How the graphs' precisions were made, from the recorded export options: the target
    decides what "int8" means."""
    precision, target = o.get("precision"), o.get("target")
    if precision is None:
        return "not recorded"
    if precision in ("fp32", "fp16"):
        return f"{precision} graphs (--target {target})"
    calib = f"{o.get('calib_samples')} clips of {o.get('calib_data')}" if o.get("calib_data") else "random frames"
    weight_only = f"weight-only {precision.upper()} (MatMulNBits)"
    if target == "cpu":
        vision = ("dynamic activations" if o.get("cpu_activations") == "dynamic"
                  else f"static activations, minmax-calibrated on {calib}")
        # bundles exported before --cpu-decoder / --vision-kernels existed recorded neither
        decoder = (weight_only if precision == "int4" or o.get("cpu_decoder", "weight-only") == "weight-only"
                   else "INT8 weights and activations (integer GEMM), lm_head weight-only")
        kernels = ", attention and GELU on ONNX Runtime's fused kernels" if o.get("vision_kernels") == "fused" else ""
        return f"--{precision} --target cpu: vision INT8 weights, {vision}{kernels}; decoder {decoder}"
    qdq = f"explicit Q/DQ, per-channel INT8 weights, activations calibrated ({o.get('calib_method')}) on {calib}"
    decoder = "the same" if precision == "int8" else weight_only
    return f"--{precision} --target {target}: vision {qdq}; decoder {decoder}"
