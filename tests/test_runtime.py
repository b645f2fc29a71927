"""The runtime on a tiny bundle exported in the test: parity with PyTorch, KV reuse, streaming,
sampling, refusals, the CLI, and the torch-free guarantee."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from exo2ego_edge.cli import main
from exo2ego_edge.runtime import BackendError, BundleError, PromptError, Runtime, Sampling
from exo2ego_edge.runtime.generate import TokenPicker, generate
from helpers.imports import blocking_site
from helpers.students import QUESTIONS

REPO = Path(__file__).resolve().parents[1]


# --- parity: the FP32 bundle answers what the PyTorch student answers --------------------------
def test_fp32_bundle_equals_pytorch_greedy(runtime, student_dir, clips):
    import torch

    from exo2ego_edge.model import Exo2Ego
    from exo2ego_edge.prompt import TextTokenizer, get_template

    model = Exo2Ego.from_pretrained(student_dir).eval()
    tok = TextTokenizer.from_file(student_dir / "tokenizer.json", get_template(model.cfg.chat_template))
    distinct = set()
    for clip in clips:
        session = runtime.session(clip)
        for q in QUESTIONS[:2]:
            got = session.ask(q, max_new_tokens=10)
            with torch.no_grad():
                visual = model(torch.from_numpy(session.frames)[None])
            want = model.generate(visual, [tok.prompt_ids(model.cfg.system_prompt, q)], tok.stop_id, 10)[0]
            assert got.token_ids == want, (clip.name, q)
            assert got.text == tok.decode(want)
            distinct.add(tuple(want))
    assert len(distinct) >= 4, "answers should differ per clip and question, else parity is vacuous"


# --- logits_to_keep ----------------------------------------------------------------------------
def _bundle_without_logits_to_keep(bundle: Path, dst: Path) -> Path:
    """A bundle as exported before ``logits_to_keep``: the decoder returns every position's logits."""
    import onnx
    from onnx import numpy_helper

    from exo2ego_edge.bundle import sha256_file

    shutil.copytree(bundle, dst)
    model = onnx.load(str(dst / "decoder.onnx"))
    inputs = [i for i in model.graph.input if i.name != "logits_to_keep"]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    model.graph.initializer.append(numpy_helper.from_array(np.array(0, dtype=np.int64), "logits_to_keep"))
    onnx.save(model, str(dst / "decoder.onnx"))
    m = json.loads((dst / "manifest.json").read_text())
    spec = m["graphs"]["decoder"]
    spec["inputs"] = [t for t in spec["inputs"] if t["name"] != "logits_to_keep"]
    spec["outputs"][0]["shape"][1] = "sequence"
    m["files"]["decoder.onnx"] = sha256_file(dst / "decoder.onnx")
    (dst / "manifest.json").write_text(json.dumps(m))
    return dst


def test_prefill_projects_one_row_and_scoring_gets_k(runtime, bundle_dir, clips, tmp_path):
    dec, prompt = runtime.decoder, runtime.prompt
    assert dec.keeps_logits
    session = runtime.session(clips[0])
    ids = prompt.question_ids(QUESTIONS[0]) + [5, 9, 11]
    state = dec.start(session.kv_prefix)
    rows = [dec.step(state, prompt.embed(ids[:-3])).copy()]
    rows += [dec.step(state, prompt.embed([t])).copy() for t in ids[-3:-1]]
    assert dec.step_logits.shape == (1, 1, dec.vocab)  # the prefill landed in the one-row buffer
    for k in (3, 1):
        got = dec.logits(session.kv_prefix, prompt.embed(ids[:-1]), k)
        assert got.shape == (k, dec.vocab)
        np.testing.assert_allclose(got, np.stack(rows)[3 - k :], rtol=0, atol=1e-4)
    assert dec.logits(session.kv_prefix, prompt.embed(ids), 0).shape == (len(ids), dec.vocab)
    # A bundle from before logits_to_keep: told apart by its manifest, and it answers the same.
    old_bundle = _bundle_without_logits_to_keep(bundle_dir, tmp_path / "old")
    old = Runtime.load(old_bundle, backend="ort", device="cpu", threads=1)
    assert not old.decoder.keeps_logits
    old_session = old.session(clips[0])
    assert old_session.ask(QUESTIONS[0], 6).token_ids == session.ask(QUESTIONS[0], 6).token_ids
    np.testing.assert_allclose(old.decoder.logits(old_session.kv_prefix, prompt.embed(ids[:-1]), 3),
                               np.stack(rows), rtol=0, atol=1e-4)


def test_ort_threads_do_not_spin_unless_asked():
    from exo2ego_edge.runtime.ort_backend import session_options

    key = "session.intra_op.allow_spinning"
    assert session_options(2).get_session_config_entry(key) == "0"
    assert session_options(2, spin=True).get_session_config_entry(key) == "1"


# --- KV reuse ----------------------------------------------------------------------------------
def test_second_question_reruns_neither_vision_nor_prefix(runtime, clips):
    session = runtime.session(clips[0])
    first = session.ask(QUESTIONS[0], max_new_tokens=6)
    vision_calls, decoded = runtime.vision.calls, runtime.decoder.tokens_processed
    second = session.ask(QUESTIONS[1], max_new_tokens=6)
    question_len = len(runtime.prompt.question_ids(QUESTIONS[1]))
    assert runtime.vision.calls == vision_calls
    # Only the question and the answer's own tokens went through the decoder, never the prefix
    # (the last answer token is fed back only when the model went on to choose the stop token).
    fed_back = len(second.token_ids) - (second.stopped == "length")
    assert runtime.decoder.tokens_processed - decoded == question_len + fed_back
    assert first.timings.vision_s > 0 and first.timings.prefix_prefill_s > 0
    assert second.timings.vision_s == 0 and second.timings.prefix_prefill_s == 0
    # And reuse changes nothing: a fresh session answers the second question identically.
    assert runtime.session(clips[0]).ask(QUESTIONS[1], max_new_tokens=6).token_ids == second.token_ids


@pytest.fixture(scope="module")
def concat_runtime(student_dir, tmp_path_factory):
    """The same student with the concat KV cache (what GPU targets and older bundles have)."""
    from exo2ego_edge.export.pipeline import export_bundle

    out = export_bundle(student_dir, tmp_path_factory.mktemp("concat") / "fp32", kv_cache="concat",
                        parity_samples=1).out
    return Runtime.load(out, backend="ort", device="cpu", threads=1)


def test_in_place_and_concat_caches_answer_alike(runtime, concat_runtime, clips, monkeypatch):
    decoder = runtime.decoder
    assert runtime.manifest.decoder.kv_cache == "in-place" and concat_runtime.manifest.decoder.kv_cache == "concat"
    loads = []
    load = decoder._load
    monkeypatch.setattr(decoder, "_load", lambda prefix: (loads.append(prefix.length), load(prefix)))
    answers = {}
    for rt in (runtime, concat_runtime):
        first, second = rt.session(clips[0]), rt.session(clips[1])
        # the second clip's prefill overwrites the cache after the text prefix, so the first
        # clip's next question copies its prefix back in
        order = [(first, 0), (first, 1), (second, 0), (first, 2), (second, 1)]
        answers[rt] = [s.ask(QUESTIONS[q], max_new_tokens=8).token_ids for s, q in order]
        ids = rt.prompt.question_ids(QUESTIONS[0])
        answers[rt].append(rt.decoder.logits(first.kv_prefix, rt.prompt.embed(ids), 0))
        answers[rt].append(first.prefix_length)
    *tokens, logits, first_prefix = answers[runtime]
    *want_tokens, want_logits, _ = answers[concat_runtime]
    assert tokens == want_tokens and len({tuple(t) for t in tokens}) > 1
    np.testing.assert_allclose(logits, want_logits, rtol=0, atol=1e-4)
    # Copied back: the first clip after the second, the second after the first, the first again
    # for its logits; never for a clip's own next question. Both prefixes have one length.
    assert loads == [first_prefix] * 3


def test_kept_cache_bindings_give_the_logits_of_bindings_made_at_every_call(runtime, clips, monkeypatch):
    """The decoder rebinds its cache only when a buffer or shape changes (ort_backend._bind): over
    steps that grow the cache past a chunk, and a second generation on the same rows, the logits
    are those of a decoder that rebinds everything at every call."""
    decoder, prompt = runtime.decoder, runtime.prompt
    prefix = runtime.session(clips[0]).kv_prefix
    tokens = prompt.embed(list(range(3, 3 + decoder.CHUNK + 8)))

    def generate() -> list[np.ndarray]:
        out = []
        for first in (0, 5):  # two generations from the prefix: the second starts on rows the first wrote
            state = decoder.start(prefix)
            out += [decoder.step(state, tokens[i : i + 1]).copy() for i in range(first, len(tokens))]
        return out

    kept = generate()
    assert decoder.capacity > prefix.length + decoder.CHUNK  # the cache grew during the steps
    bind = decoder._bind

    def rebinding(*args, **kwargs):
        decoder.bound = {False: None, True: None}  # forget what is bound: everything is bound anew
        return bind(*args, **kwargs)

    monkeypatch.setattr(decoder, "_bind", rebinding)
    fresh = generate()
    for got, want in zip(kept, fresh, strict=True):
        np.testing.assert_array_equal(got, want)


def test_in_place_cache_refuses_a_generation_another_call_overwrote(runtime, clips):
    decoder, prompt = runtime.decoder, runtime.prompt
    prefix = runtime.session(clips[0]).kv_prefix
    first, second = decoder.start(prefix), decoder.start(prefix)
    decoder.step(first, prompt.embed([5, 6]))
    decoder.step(second, prompt.embed([7]))  # starts on the same rows: the first is over
    with pytest.raises(BackendError, match="one generation at a time"):
        decoder.step(first, prompt.embed([8]))
    decoder.step(second, prompt.embed([9]))


def test_stream_yields_the_answer_piece_by_piece(runtime, clips):
    stream = runtime.stream(clips[1], QUESTIONS[0], max_new_tokens=8)
    pieces = list(stream)
    answer = stream.answer
    assert [p.id for p in pieces] == answer.token_ids
    assert "".join(p.text for p in pieces) == answer.text
    t = answer.timings.to_dict()
    assert len(t["token_s"]) == len(answer.token_ids) - 1 and t["ttft_s"] > 0


# --- sampling ----------------------------------------------------------------------------------
def test_sampling_is_deterministic_by_seed(runtime, clips):
    session = runtime.session(clips[2])
    s = Sampling(temperature=1.5, top_k=50, top_p=0.95, repetition_penalty=1.2, seed=7)
    a, b = session.ask(QUESTIONS[0], 8, s), session.ask(QUESTIONS[0], 8, s)
    assert a.token_ids == b.token_ids
    others = {tuple(session.ask(QUESTIONS[0], 8, Sampling(temperature=1.5, seed=k)).token_ids) for k in range(4)}
    assert len(others) > 1


def test_token_picker_rules():
    logits = np.array([1.0, 3.0, 2.0, -1.0], dtype=np.float32)
    assert TokenPicker()(logits, []) == 1
    assert TokenPicker(Sampling(temperature=1.0, top_k=1, seed=0))(logits, []) == 1
    assert TokenPicker(Sampling(temperature=1.0, top_p=0.01, seed=0))(logits, []) == 1
    # A penalty of 2 halves token 1's logit (3 -> 1.5): token 2 now wins greedily.
    assert TokenPicker(Sampling(repetition_penalty=2.0))(logits, [1]) == 2
    with pytest.raises(Exception, match="top-p"):
        Sampling(top_p=0)


def test_generate_stops_on_stop_token_and_budget():
    rows = iter([np.eye(5)[k] for k in (2, 4, 3)])
    out = list(generate(np.eye(5)[1], lambda tok: next(rows), TokenPicker(), [3], 10))
    assert out == [1, 2, 4]
    assert list(generate(np.eye(5)[1], lambda tok: np.eye(5)[1], TokenPicker(), [3], 4)) == [1, 1, 1, 1]


# --- refusals ----------------------------------------------------------------------------------
def test_empty_and_too_long_questions_are_refused(runtime, clips):
    session = runtime.session(clips[0])
    with pytest.raises(PromptError, match="empty"):
        session.ask("   ")
    with pytest.raises(PromptError, match="max_seq"):
        session.ask("why " * 2000)


def _copy(bundle: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "bundle"
    shutil.copytree(bundle, dst)
    return dst


def test_bad_bundles_are_refused(bundle_dir, tmp_path):
    b = _copy(bundle_dir, tmp_path)
    (b / "decoder.onnx").write_bytes((b / "decoder.onnx").read_bytes()[:-10] + b"0123456789")
    with pytest.raises(BundleError, match="checksum"):
        Runtime.load(b)
    (b / "decoder.onnx").unlink()
    with pytest.raises(BundleError, match="missing"):
        Runtime.load(b)
    m = json.loads((b / "manifest.json").read_text())
    m["decoder"]["kv_cache"] = "paged"
    (b / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="decoder.kv_cache 'paged' is not one of concat, in-place"):
        Runtime.load(b)
    m["format_version"] = 99
    (b / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="newer"):
        Runtime.load(b)


def test_tensorrt_backend_refusals(bundle_dir):
    from exo2ego_edge.bundle import EngineSpec, load_manifest
    from exo2ego_edge.runtime.trt_backend import GpuTarget, TrtBackend, check_engine

    manifest = load_manifest(bundle_dir)
    with pytest.raises(BackendError, match="no TensorRT engine"):
        TrtBackend(bundle_dir, manifest)
    spec = EngineSpec("engines/decoder.fp16.orin.plan", "decoder", "fp16", "10.3.0", "8.7", "Orin")
    manifest.engines = [spec, EngineSpec("engines/vision.fp16.orin.plan", "vision", "fp16", "10.3.0", "8.7", "Orin")]
    with pytest.raises(BackendError, match="needs TensorRT and pycuda"):
        TrtBackend(bundle_dir, manifest)
    with pytest.raises(BackendError, match=r"TensorRT 10\.3\.0.*10\.7\.0.*rebuild"):
        check_engine(spec, GpuTarget("10.7.0.23", "8.7", "Orin"))
    with pytest.raises(BackendError, match=r"sm 8\.7.*sm 9\.0.*rebuild"):
        check_engine(spec, GpuTarget("10.3.0.30", "9.0", "NVIDIA H100"))
    check_engine(spec, GpuTarget("10.3.0.30", "8.7", "Orin"))  # same version and GPU: accepted


def test_unknown_backend_and_missing_provider(bundle_dir):
    with pytest.raises(BackendError, match="unknown backend"):
        Runtime.load(bundle_dir, backend="magic")
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(BackendError, match="CUDAExecutionProvider"):
            Runtime.load(bundle_dir, backend="ort", device="cuda")


# --- CLI ---------------------------------------------------------------------------------------
def _cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(args)
        raise SystemExit(0)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_cli_json_and_stream(bundle_dir, clips, capsys):
    code, out, _ = _cli(["run", "--bundle", str(bundle_dir), "--video", str(clips[0]), "-q", QUESTIONS[0],
                         "--json", "--max-new-tokens", "5"], capsys)
    assert code == 0
    record = json.loads(out)
    assert set(record) >= {"answer", "token_ids", "timings"} and len(record["token_ids"]) <= 5
    assert {"decode_video_s", "vision_s", "prefix_prefill_s", "ttft_s", "token_s"} <= set(record["timings"])
    code, out, _ = _cli(["run", "--bundle", str(bundle_dir), "--video", str(clips[0]), "-q", QUESTIONS[0],
                         "--stream", "--max-new-tokens", "5"], capsys)
    assert code == 0 and out.rstrip("\n") == record["answer"]


@pytest.mark.parametrize("case", ["missing", "empty", "text", "question", "newer"])
def test_cli_bad_input_is_one_line(case, bundle_dir, clips, tmp_path, capsys):
    video, bundle, question = str(clips[0]), str(bundle_dir), QUESTIONS[0]
    if case == "missing":
        video = str(tmp_path / "nope.mp4")
    elif case == "empty":
        (tmp_path / "empty.mp4").write_bytes(b"")
        video = str(tmp_path / "empty.mp4")
    elif case == "text":
        (tmp_path / "notes.mp4").write_text("just some text\n" * 10)
        video = str(tmp_path / "notes.mp4")
    elif case == "question":
        question = ""
    else:
        b = _copy(bundle_dir, tmp_path)
        m = json.loads((b / "manifest.json").read_text())
        m["format_version"] += 1
        (b / "manifest.json").write_text(json.dumps(m))
        bundle = str(b)
    code, _, err = _cli(["run", "--bundle", bundle, "--video", video, "-q", question], capsys)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


# --- torch-free --------------------------------------------------------------------------------
def test_runtime_and_cli_work_with_torch_unimportable(bundle_dir, clips, tmp_path):
    site = blocking_site(tmp_path, ("torch", "transformers", "optimum"), "is blocked: the runtime must not import it")
    env = {**os.environ, "PYTHONPATH": str(site)}
    probe = "import exo2ego_edge.runtime, sys\ntry:\n import torch\nexcept ImportError:\n print('blocked')"
    r = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "blocked" in r.stdout, r.stderr
    exe = [sys.executable, "-c", "from exo2ego_edge.cli import main; main()"]
    r = subprocess.run([*exe, "run", "--bundle", str(bundle_dir), "--video", str(clips[0]), "-q", QUESTIONS[0],
                        "--json", "--max-new-tokens", "4"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "token_ids" in json.loads(r.stdout)
    r = subprocess.run([*exe, "doctor"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "ort-cpu" in r.stdout, r.stderr


@pytest.mark.parametrize("spec, installed, unmet", [
    (">=1.22", "1.23.2", False), (">=1.22", "1.21.1", True), (">=1.22", "1.22.0rc1", False),
    (">=1.18", "1.23.2+cu126", False), ("==1.32.0", "1.32.0+cpu", False), ("==1.32.0", "1.23.2", True),
    (None, "1.0", False),
])  # fmt: skip
def test_onnxruntime_requirements_read_release_local_and_pre_release_versions(spec, installed, unmet):
    from exo2ego_edge.bundle import unmet_requirement

    assert unmet_requirement(spec, installed) is unmet
