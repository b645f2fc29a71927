"""The Python API: ``Runtime.load(bundle)`` -> ``rt.ask(video, question)`` / ``rt.stream(...)`` /
``rt.session(video)`` for several questions about one clip.

KV reuse follows the prompt's order ``prefix text | visual tokens | question``:

- the prefix text's KV is computed once per Runtime (it is the same for every clip);
- a Session extends it with its clip's visual tokens once, on the first question, and keeps the
  result; every question then prefills only its own tokens on top of that frozen prefix.

So a second question on a Session runs neither the vision graph nor the shared prefix.

Policies: an empty question is refused; a question that does not fit the context left after the
prompt prefix and the video (``decoder.max_seq``) is **refused**, not truncated (cutting a
question silently changes what is asked); ``max_new_tokens`` is capped to the room left, with a
warning, and such an answer reports ``stopped="context"``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from exo2ego_edge.bundle import Manifest, load_manifest, unmet_requirement
from exo2ego_edge.runtime.errors import BackendError, PromptError, VideoError
from exo2ego_edge.runtime.generate import GREEDY, Sampling, TextStream, TokenPicker, generate
from exo2ego_edge.runtime.prompting import PromptBuilder

log = logging.getLogger(__name__)

BACKENDS = ("auto", "ort", "tensorrt")


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


@dataclass
class Timings:
    """Seconds per stage of one answer. Stages a Session reused from an earlier question are 0."""

    decode_video_s: float = 0.0
    preprocess_s: float = 0.0
    vision_s: float = 0.0
    prefix_prefill_s: float = 0.0  # prompt prefix + visual tokens (0 when the Session reused it)
    question_prefill_s: float = 0.0
    ttft_s: float = 0.0  # from the call to the first answer token
    token_s: list[float] = field(default_factory=list)  # each later token's decoder step + pick
    total_s: float = 0.0

    @property
    def tokens_per_s(self) -> float | None:
        return len(self.token_s) / sum(self.token_s) if self.token_s and sum(self.token_s) > 0 else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["token_p50_s"] = _percentile(self.token_s, 50)
        d["token_p90_s"] = _percentile(self.token_s, 90)
        d["tokens_per_s"] = self.tokens_per_s
        return d


@dataclass
class Answer:
    question: str
    text: str
    token_ids: list[int]
    stopped: str  # "stop" (stop token), "length" (max_new_tokens), "context" (max_seq reached)
    timings: Timings

    def to_dict(self) -> dict[str, Any]:
        return {"question": self.question, "answer": self.text, "token_ids": self.token_ids,
                "stopped": self.stopped, "timings": self.timings.to_dict()}


@dataclass(frozen=True)
class Token:
    """One streamed answer token and the text it completes (may be "" mid-character)."""

    id: int
    text: str


class AnswerStream:
    """Iterate for :class:`Token` s as they are decoded; ``.answer`` is set once it is exhausted."""

    def __init__(self, tokens: Iterator[Token]):
        self._tokens = tokens
        self.answer: Answer | None = None

    def __iter__(self) -> Iterator[Token]:
        return self._tokens


def check_onnxruntime(bundle: Path, manifest: Manifest) -> None:
    """Refuse, in one line naming both versions and the fix, a bundle this ONNX Runtime cannot load."""
    try:
        import onnxruntime as ort
    except ImportError:
        return  # the backend says so itself, with the install command
    spec = manifest.required("onnxruntime")
    if not unmet_requirement(spec, ort.__version__):
        return
    if spec.startswith("=="):
        fix = (f"its graphs were saved as ONNX Runtime {spec[2:]} optimized them (export --ort-optimize); "
               f"re-export without --ort-optimize, or install onnxruntime{spec}")
    else:
        fix = f"install onnxruntime{spec} (on a Jetson, an onnxruntime-gpu wheel of that version or newer)"
    raise BackendError(f"{bundle} needs onnxruntime {spec}; this machine has {ort.__version__}: {fix}")


class Runtime:
    """A loaded bundle: backends for both graphs, the tokenizer, the prompt prefix's KV cache."""

    def __init__(self, bundle: Path, manifest, backend, prompt: PromptBuilder, video=None):
        from exo2ego_edge.runtime.video import decode_clip

        self.bundle, self.manifest, self.backend, self.prompt = bundle, manifest, backend, prompt
        self.vision, self.decoder = backend.vision, backend.decoder
        # (decode_clip function, what it runs on), from runtime.video.clip_decoder
        self.decode_clip, self.video_decoder = video or (decode_clip, "software")
        pre = manifest.preprocessing
        self.num_frames, self.image_size = pre.num_frames, pre.image_size
        self._text_prefix = None  # KVPrefix of the prompt text before the video, made on first use

    @classmethod
    def load(cls, bundle: str | os.PathLike, backend: str = "auto", device: str = "auto",
             threads: int | None = None, verify: bool = True, spin: bool = False,
             video_decoder: str = "auto") -> Runtime:
        """Verify ``bundle`` (format version, every file's sha256) and load its graphs.

        backend: "ort" (ONNX Runtime; ``device`` auto/cpu/cuda/tensorrt picks its provider),
        "tensorrt" (the bundle's engines via TensorRT + pycuda), or "auto" (TensorRT when the
        bundle has engines and TensorRT imports, else ONNX Runtime). ``threads`` and ``spin``
        (idle ORT threads busy-wait; off, see ``ort_backend.session_options``) tune ONNX Runtime.
        ``video_decoder``: "auto" (a Jetson's NVDEC where present, else FFmpeg on the CPU),
        "software" or "nvdec" (see ``runtime.video.clip_decoder``).
        """
        from exo2ego_edge.runtime.video import clip_decoder

        video = clip_decoder(video_decoder)  # before loading graphs: a refusal costs nothing
        bundle = Path(bundle)
        manifest = load_manifest(bundle, verify=verify)
        if manifest.parity and not manifest.parity.get("passed", True) and not manifest.provenance.get("random_weights"):
            log.warning("%s failed its parity check at export and was kept with --force (%s): its answers may "
                        "differ from the PyTorch student's", bundle, "; ".join(manifest.parity.get("failures", [])))
        if backend not in BACKENDS:
            raise BackendError(f"unknown backend '{backend}'; choose one of: {', '.join(BACKENDS)}")
        if backend == "auto":
            backend = "tensorrt" if manifest.engines and _tensorrt_importable() else "ort"
        if backend == "tensorrt":
            from exo2ego_edge.runtime.trt_backend import TrtBackend

            impl = TrtBackend(bundle, manifest)
        else:
            from exo2ego_edge.runtime.ort_backend import OrtBackend

            check_onnxruntime(bundle, manifest)
            impl = OrtBackend(bundle, manifest, device=device, threads=threads, spin=spin)
        log.info("loaded %s on %s", bundle, impl.description)
        return cls(bundle, manifest, impl, PromptBuilder(bundle, manifest, impl.decoder.embed_dtype), video)

    # --- visual tokens --------------------------------------------------------------------
    def encode_frames(self, frames: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) frames -> visual tokens (N, P, D) through the vision graph, once."""
        s = self.image_size
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1:] != (s, s, 3):
            raise VideoError(f"frames must be uint8 (N, {s}, {s}, 3), got {frames.dtype} {frames.shape}")
        return self.vision.encode(frames)

    def text_prefix(self):
        """KV of the prompt text before the video: identical for every clip, computed once."""
        if self._text_prefix is None and self.prompt.prefix_ids:
            self._text_prefix, _ = self.decoder.extend(None, self.prompt.embed(self.prompt.prefix_ids))
        return self._text_prefix

    # --- questions ------------------------------------------------------------------------
    def session(self, video: str | os.PathLike | None = None, *, frames: np.ndarray | None = None,
                start: float | None = None, end: float | None = None) -> Session:
        """A clip to ask several questions about (a video file's window, or ready frames)."""
        return Session(self, video=video, frames=frames, start=start, end=end)

    def ask(self, video: str | os.PathLike, question: str, max_new_tokens: int = 64,
            sampling: Sampling = GREEDY, start: float | None = None, end: float | None = None) -> Answer:
        return self.session(video, start=start, end=end).ask(question, max_new_tokens, sampling)

    def stream(self, video: str | os.PathLike, question: str, max_new_tokens: int = 64,
               sampling: Sampling = GREEDY, start: float | None = None, end: float | None = None) -> AnswerStream:
        return self.session(video, start=start, end=end).stream(question, max_new_tokens, sampling)


def _tensorrt_importable() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorrt") is not None and importlib.util.find_spec("pycuda") is not None


class Session:
    """One clip, many questions: its visual tokens and the KV after them are made once."""

    def __init__(self, runtime: Runtime, video=None, frames: np.ndarray | None = None,
                 start: float | None = None, end: float | None = None,
                 visual_tokens: np.ndarray | None = None):
        if sum(x is not None for x in (video, frames, visual_tokens)) != 1:
            raise VideoError("a session needs exactly one of: a video, frames, visual tokens")
        self.rt = runtime
        self.video, self.frames, self.start, self.end = video, frames, start, end
        self.visual_tokens = visual_tokens  # (N, P, D)
        self._prefix = None  # KVPrefix after prefix text + visual tokens
        self._prep = Timings()  # costs of preparing the clip, reported by the question that paid them

    @classmethod
    def from_visual_tokens(cls, runtime: Runtime, tokens: np.ndarray) -> Session:
        """A session on already-encoded frames (a live source's rolling window)."""
        return cls(runtime, visual_tokens=tokens)

    def _prepare(self) -> None:
        if self._prefix is not None:
            return
        rt, t = self.rt, self._prep
        if self.visual_tokens is None:
            if self.frames is None:
                t0 = time.perf_counter()
                self.frames = rt.decode_clip(self.video, self.start, self.end, rt.num_frames, rt.image_size)
                t.decode_video_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            frames = np.ascontiguousarray(self.frames)  # the graph's NHWC uint8 layout, no copy if already so
            t.preprocess_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            self.visual_tokens = rt.encode_frames(frames)
            t.vision_s = time.perf_counter() - t0
        d = rt.manifest.decoder
        n_frames = self.visual_tokens.shape[0]
        if n_frames > d.max_frames:
            raise VideoError(f"{n_frames} frames exceed the bundle's max_frames {d.max_frames}")
        t0 = time.perf_counter()
        visual = self.visual_tokens.reshape(-1, self.visual_tokens.shape[-1])  # (N*P, D), a view
        if visual.dtype != rt.prompt.embed_dtype:
            visual = visual.astype(rt.prompt.embed_dtype)
        self._prefix, _ = rt.decoder.extend(rt.text_prefix(), visual)
        t.prefix_prefill_s = time.perf_counter() - t0

    @property
    def prefix_length(self) -> int:
        self._prepare()
        return self._prefix.length

    @property
    def kv_prefix(self):
        """The decoder cache after the prompt prefix and this clip's visual tokens (made on first
        use, then frozen): ``decoder.start(...)`` / ``decoder.logits(...)`` run on top of it."""
        self._prepare()
        return self._prefix

    def ask(self, question: str, max_new_tokens: int = 64, sampling: Sampling = GREEDY) -> Answer:
        s = self.stream(question, max_new_tokens, sampling)
        for _ in s:
            pass
        return s.answer

    def stream(self, question: str, max_new_tokens: int = 64, sampling: Sampling = GREEDY) -> AnswerStream:
        # Validate before anything runs, so a bad question costs no decoding.
        ids = self.rt.prompt.question_ids(question)
        if max_new_tokens < 1:
            raise PromptError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        stream = AnswerStream(iter(()))
        stream._tokens = self._tokens(question, ids, max_new_tokens, sampling, stream)
        return stream

    def _tokens(self, question: str, ids: list[int], max_new_tokens: int, sampling: Sampling,
                stream: AnswerStream) -> Iterator[Token]:
        rt, t_call = self.rt, time.perf_counter()
        self._prepare()
        timings, self._prep = self._prep, Timings()  # preparation is billed once
        max_seq = rt.manifest.decoder.max_seq
        room = max_seq - self._prefix.length
        if len(ids) >= room:
            raise PromptError(
                f"the question takes {len(ids)} tokens but only {room - 1} fit after the prompt and "
                f"video (bundle max_seq {max_seq}); ask a shorter question"
            )
        budget = min(max_new_tokens, room - len(ids))
        if budget < max_new_tokens:
            log.warning("max_new_tokens %d capped to %d by the bundle's max_seq %d", max_new_tokens, budget, max_seq)
        decoder = rt.decoder
        state = decoder.start(self._prefix)
        t0 = time.perf_counter()
        logits = decoder.step(state, rt.prompt.embed(ids))
        timings.question_prefill_s = time.perf_counter() - t0

        def step(token: int) -> np.ndarray:
            return decoder.step(state, rt.prompt.embed([token]))

        text = TextStream(rt.prompt.decode)
        out: list[int] = []
        last = time.perf_counter()
        for token in generate(logits, step, TokenPicker(sampling), rt.prompt.stop_ids, budget):
            now = time.perf_counter()
            if out:
                timings.token_s.append(now - last)
            else:
                timings.ttft_s = now - t_call
            last = now
            out.append(token)
            yield Token(token, text.push(token))
        text.flush()  # an answer cut mid-character keeps its U+FFFD in .text, not in the stream
        if len(out) < budget:
            stopped = "stop"
        else:
            stopped = "context" if budget < max_new_tokens else "length"
        if not out:
            timings.ttft_s = time.perf_counter() - t_call
        timings.total_s = time.perf_counter() - t_call
        stream.answer = Answer(question, text.text, out, stopped, timings)
