"""ONNX Runtime provider options (runtime/ort_backend.py): TensorRT EP caches, precision flags and
explicit profiles built from a bundle's manifest, CUDA EP options, none for the CPU provider.
The shipped bundle's manifest and variants of it as a GPU export would record them; no GPU needed."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from exo2ego_edge.assets import SHIPPED_BUNDLE
from exo2ego_edge.bundle import LOGITS_TO_KEEP, Manifest, load_manifest, past_names
from exo2ego_edge.runtime import ort_backend
from exo2ego_edge.runtime.ort_backend import PROFILE_KEYS, PROVIDER_ORDER, provider_options

TRT, CUDA, CPU = PROVIDER_ORDER


@pytest.fixture(scope="module")
def shipped() -> Manifest:
    return load_manifest(SHIPPED_BUNDLE)


def exported(manifest: Manifest, target: str, precision: str | None = None, optimized: bool = False) -> Manifest:
    """``manifest`` as an export for ``target`` at ``precision`` would write it."""
    graphs = {k: dataclasses.replace(g, precision=precision or g.precision) for k, g in manifest.graphs.items()}
    options = {**manifest.provenance.get("options", {}), "target": target}
    provenance = {**manifest.provenance, "options": options,
                  "ort_graph_optimization": "extended" if optimized else None}
    return dataclasses.replace(manifest, graphs=graphs, provenance=provenance)


def trt_options(manifest: Manifest, graph: str, bundle: Path = SHIPPED_BUNDLE) -> dict:
    return provider_options(bundle, manifest, graph, [TRT, CUDA, CPU])[0]


def profiles(options: dict) -> tuple[dict[str, list[int]], ...]:
    """The (min, opt, max) profile strings parsed back into {input: dims}."""
    items = [(item.split(":") for item in options[key].split(",")) for key in PROFILE_KEYS]
    return tuple({name: [int(v) for v in dims.split("x")] for name, dims in point} for point in items)


def test_decoder_profiles_name_every_dynamic_input_within_the_export_limits(shipped):
    m = exported(shipped, "tensorrt")
    d, spec = m.decoder, m.graphs["decoder"]
    lo, opt, hi = profiles(trt_options(m, "decoder"))
    dynamic = {t.name for t in spec.inputs if any(isinstance(a, str) for a in t.shape)}
    assert set(past_names(d.num_layers)) <= dynamic
    assert set(lo) == set(opt) == set(hi) == dynamic | {LOGITS_TO_KEEP}  # the scalar: a shape tensor
    for t in spec.inputs:
        if t.name == LOGITS_TO_KEEP:
            assert (lo[t.name], opt[t.name], hi[t.name]) == ([0], [1], [d.max_seq])  # its value
            continue
        assert len(lo[t.name]) == len(t.shape)
        for axis, a, b, c in zip(t.shape, lo[t.name], opt[t.name], hi[t.name]):
            assert a <= b <= c, (t.name, axis)
            if isinstance(axis, int):
                assert a == b == c == axis
    past = past_names(d.num_layers)[0]
    assert [lo[past][2], opt[past][2], hi[past][2]] == [0, d.max_seq // 2, d.max_seq - 1]  # empty first past
    assert [lo["inputs_embeds"][1], hi["inputs_embeds"][1]] == [1, d.max_seq]
    assert hi["attention_mask"][1] == d.max_seq
    assert all(p[name][0] == 1 for p in (lo, opt, hi) for name in dynamic)  # batch 1
    # TensorRT tunes at opt, where total = past + sequence must hold
    assert opt["attention_mask"][1] == opt[past][2] + opt["inputs_embeds"][1]
    assert lo["attention_mask"][1] == lo[past][2] + lo["inputs_embeds"][1]


def test_vision_profile_spans_one_to_max_frames(shipped):
    m = exported(shipped, "cuda", "fp16")
    lo, opt, hi = profiles(trt_options(m, "vision"))
    (frames,) = m.graphs["vision"].inputs
    fixed = [a for a in frames.shape if isinstance(a, int)]
    assert lo[frames.name] == [1, *fixed] and hi[frames.name] == [m.decoder.max_frames, *fixed]
    assert 1 <= opt[frames.name][0] <= m.decoder.max_frames


def test_caches_live_beside_the_bundle_outside_its_checksummed_files(shipped, tmp_path):
    bundle = tmp_path / "bundle"
    opts = {g: trt_options(shipped, g, bundle) for g in ("vision", "decoder")}
    checksummed = {(bundle / f).resolve() for f in shipped.files}
    for graph, o in opts.items():
        assert o["trt_engine_cache_enable"] and o["trt_timing_cache_enable"]
        for key in ("trt_engine_cache_path", "trt_timing_cache_path"):
            path = Path(o[key])
            assert path.is_absolute() and path.parent.resolve() != bundle.resolve()
            assert bundle.resolve() not in path.resolve().parents and path.resolve() not in checksummed
            assert path.resolve().is_relative_to(tmp_path.resolve())  # beside it
        assert shipped.files[shipped.graphs[graph].file][:16] in o["trt_engine_cache_path"]
    # one engine folder per graph (and per checksum: a re-export gets fresh ones), one timing cache
    assert opts["vision"]["trt_engine_cache_path"] != opts["decoder"]["trt_engine_cache_path"]
    assert opts["vision"]["trt_timing_cache_path"] == opts["decoder"]["trt_timing_cache_path"]
    reexported = dataclasses.replace(shipped, files={**shipped.files, "decoder.onnx": "f" * 64})
    moved = trt_options(reexported, "decoder", bundle)["trt_engine_cache_path"]
    assert moved != opts["decoder"]["trt_engine_cache_path"]
    assert not any(tmp_path.iterdir())  # pure: nothing created


@pytest.mark.parametrize("target, precision, optimized, fp16, int8, profiled", [
    ("tensorrt", "fp32", False, False, False, True),
    ("cuda", "fp16", False, True, False, True),
    ("tensorrt", "int8", False, True, True, True),  # explicit Q/DQ: int8, the float rest in fp16
    ("cpu", "int8", False, False, False, False),  # MatMulNBits / dynamic int8: not TensorRT's
    ("tensorrt", "int4", False, False, False, False),  # MatMulNBits decoder: ORT splits it
    ("cpu", "fp32", True, False, False, False),  # ORT-optimized: contrib ops split it
    ("cpu", "fp32", False, False, False, True),
])
def test_precision_flags_and_profiles_follow_the_graph(shipped, target, precision, optimized, fp16, int8, profiled):
    o = trt_options(exported(shipped, target, precision, optimized), "decoder")
    assert (o["trt_fp16_enable"], o["trt_int8_enable"]) == (fp16, int8)
    assert o.get("trt_layer_norm_fp32_fallback", False) == fp16
    assert all((key in o) == profiled for key in PROFILE_KEYS)
    assert "trt_int8_calibration_table_name" not in o


def test_shipped_cpu_bundle_gets_caches_but_no_profiles(shipped):
    o = trt_options(shipped, "decoder")  # --int8 --target cpu, saved ORT-optimized
    assert o["trt_engine_cache_enable"] and not o["trt_int8_enable"] and not o["trt_fp16_enable"]
    assert not any(key in o for key in PROFILE_KEYS)


def test_cpu_provider_gets_no_options(shipped):
    assert provider_options(SHIPPED_BUNDLE, shipped, "decoder", [CPU]) == [{}]
    _, cuda, cpu = provider_options(SHIPPED_BUNDLE, shipped, "vision", [TRT, CUDA, CPU])
    assert cpu == {}
    assert cuda == {"arena_extend_strategy": "kSameAsRequested", "cudnn_conv_algo_search": "HEURISTIC"}


def test_session_creates_the_caches_and_retries_without_refused_profiles(shipped, tmp_path, monkeypatch):
    import onnxruntime

    calls = []

    def fake_session(path, sess_options=None, providers=None, provider_options=None):
        calls.append(provider_options)
        if any(PROFILE_KEYS[0] in o for o in provider_options):
            raise RuntimeError("[ONNXRuntimeError] : 11 : EP_FAIL : User needs to provide all the dynamic "
                               "shape inputs with associated profiles\nFollowing input(s) ...")
        return "session"

    monkeypatch.setattr(onnxruntime, "InferenceSession", fake_session)
    options = provider_options(tmp_path / "b", exported(shipped, "tensorrt"), "decoder", [TRT, CUDA, CPU])
    assert ort_backend._session(tmp_path / "b" / "decoder.onnx", [TRT, CUDA, CPU], 1, False, options) == "session"
    assert len(calls) == 2 and not any(key in calls[1][0] for key in PROFILE_KEYS)
    assert calls[1][0]["trt_engine_cache_enable"] and calls[1][1:] == options[1:]
    assert Path(options[0]["trt_engine_cache_path"]).is_dir() and Path(options[0]["trt_timing_cache_path"]).is_dir()


def test_unwritable_cache_location_turns_the_caches_off(shipped, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")  # the bundle's parent is a file: its cache folder cannot be made
    options = provider_options(blocker / "b", shipped, "vision", [TRT, CPU])
    trt, cpu = ort_backend._with_cache_dirs(options)
    assert not any(key in trt for key in ort_backend.CACHE_KEYS) and "trt_fp16_enable" in trt and cpu == {}


def test_cpu_session_still_runs(shipped):
    backend = ort_backend.OrtBackend(SHIPPED_BUNDLE, shipped, device="cpu", threads=1)
    assert backend.providers == [CPU]
    assert set(backend.vision.session.get_provider_options()) == {CPU}
    size = shipped.preprocessing.image_size
    tokens = backend.vision.encode(np.zeros((1, size, size, 3), dtype=np.uint8))
    _, logits = backend.decoder.extend(None, tokens[0].astype(backend.decoder.embed_dtype))
    assert logits.shape == (shipped.decoder.vocab_size,) and np.isfinite(logits).all()
