"""One contender of the peer comparison, as a long-lived subprocess speaking JSON lines.

    python worker.py ENGINE MODEL_DIR --prompt-ids ids.json --new-tokens N [--threads T]

ENGINE: ``hf`` (transformers eager generate, FP32), ``optimum`` (ORTModelForCausalLM), ``genai``
(onnxruntime-genai), ``ours`` (exo2ego-edge Runtime on a bundle). Each imports only its own engine,
so the genai worker runs in benchmarks/.venv-genai with transformers 5 and the others in .venv.

Protocol: after loading, the worker prints ``{"ready": true, ...}``; then for every ``run`` line on
stdin it generates exactly N tokens after the same prompt ids (end-of-sequence ignored: min length
= max length) and prints ``{"ttft_ms": ..., "token_ms": [N-1 per-token gaps], "total_ms": ...}``.
Being long-lived lets the orchestrator interleave A B A B runs while every model stays loaded, so
machine drift lands on both sides of a ratio. ``quit`` (or EOF) ends it.

Timing is the same for everyone: ``ttft`` from the call to the first generated token, then the
gap between consecutive tokens (the decoder step + token pick), which is what the runtime's own
``Timings.token_s`` measures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable


def _emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class _Clock:
    """Timestamps each token as a generation loop produces it (a transformers streamer shape)."""

    def __init__(self) -> None:
        self.start = 0.0
        self.stamps: list[float] = []
        self._seen_prompt = False

    def reset(self) -> None:
        self.start, self.stamps, self._seen_prompt = time.perf_counter(), [], False

    def put(self, value) -> None:  # transformers calls put(prompt ids) once, then put(token) per step
        if not self._seen_prompt:
            self._seen_prompt = True
            return
        self.stamps.append(time.perf_counter())

    def end(self) -> None:
        pass

    def result(self) -> dict:
        end = time.perf_counter()
        gaps = [b - a for a, b in zip(self.stamps, self.stamps[1:])]
        return {"ttft_ms": (self.stamps[0] - self.start) * 1e3, "token_ms": [g * 1e3 for g in gaps],
                "total_ms": (end - self.start) * 1e3, "tokens": len(self.stamps)}


def _generate_runner(model, ids: list[int], new: int) -> Callable[[], dict]:
    """Timed greedy ``generate`` of exactly ``new`` tokens: HF and Optimum share this API."""
    import torch

    input_ids = torch.tensor([ids])
    clock = _Clock()

    def run() -> dict:
        clock.reset()
        model.generate(input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=new, min_new_tokens=new,
                       do_sample=False, streamer=clock, pad_token_id=0)
        return clock.result()

    return run


def hf_runner(model_dir: str, ids: list[int], new: int, threads: int | None) -> Callable[[], dict]:
    import torch
    from transformers import AutoModelForCausalLM

    if threads:
        torch.set_num_threads(threads)
    torch.set_grad_enabled(False)
    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True, dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    return _generate_runner(model, ids, new)


def optimum_runner(model_dir: str, ids: list[int], new: int, threads: int | None) -> Callable[[], dict]:
    import onnxruntime as ort
    from optimum.onnxruntime import ORTModelForCausalLM

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    model = ORTModelForCausalLM.from_pretrained(model_dir, local_files_only=True, session_options=opts,
                                                provider="CPUExecutionProvider", use_io_binding=True)
    return _generate_runner(model, ids, new)


def genai_runner(model_dir: str, ids: list[int], new: int, threads: int | None) -> Callable[[], dict]:
    import numpy as np
    import onnxruntime_genai as og

    config = og.Config(model_dir)
    model = og.Model(config)
    prompt = np.asarray(ids, dtype=np.int32)

    def run() -> dict:
        start = time.perf_counter()
        params = og.GeneratorParams(model)
        # min_length == max_length: exactly `new` tokens, end-of-sequence ignored like the others.
        params.set_search_options(max_length=len(ids) + new, min_length=len(ids) + new, do_sample=False)
        gen = og.Generator(model, params)
        gen.append_tokens(prompt)  # runs the prompt (prefill)
        stamps = []
        while not gen.is_done():
            gen.generate_next_token()  # the first only picks from prefill's logits; later ones run a step
            stamps.append(time.perf_counter())
        end = time.perf_counter()
        gaps = [b - a for a, b in zip(stamps, stamps[1:])]
        return {"ttft_ms": (stamps[0] - start) * 1e3, "token_ms": [g * 1e3 for g in gaps],
                "total_ms": (end - start) * 1e3, "tokens": len(stamps)}

    return run


def ours_runner(bundle: str, ids: list[int], new: int, threads: int | None) -> Callable[[], dict]:
    """The runtime's own API on a text-only prompt of the same length (no video: peers have none).

    The prompt ids after the runtime's fixed prefix become the "visual tokens" slot as their
    embeddings, so the decoder sees a prompt exactly ``len(ids)`` tokens long like the peers do.
    """
    import numpy as np

    from exo2ego_edge.runtime import Runtime
    from exo2ego_edge.runtime.session import Session

    rt = Runtime.load(bundle, backend="ort", device="cpu", threads=threads)
    rt.prompt.stop_ids = []  # ignore end-of-sequence, like min_new_tokens on the peers
    question = "What am I doing?"
    q_len = len(rt.prompt.question_ids(question))
    body = len(ids) - len(rt.prompt.prefix_ids) - q_len
    if body < 1:
        raise SystemExit(f"prompt of {len(ids)} ids is shorter than the runtime's fixed prompt parts")
    visual = rt.prompt.embed(ids[:body])[None]  # (1, body, D): one "frame" of body tokens
    INFO["prefix_tokens"] = len(rt.prompt.prefix_ids)

    def run() -> dict:
        session = Session.from_visual_tokens(rt, np.ascontiguousarray(visual))
        stream = session.stream(question, max_new_tokens=new)
        for _ in stream:
            pass
        t = stream.answer.timings
        return {"ttft_ms": t.ttft_s * 1e3, "token_ms": [s * 1e3 for s in t.token_s], "total_ms": t.total_s * 1e3,
                "tokens": len(stream.answer.token_ids)}

    return run


INFO: dict = {}  # extra facts a runner reports in its ready line

RUNNERS = {"hf": hf_runner, "optimum": optimum_runner, "genai": genai_runner, "ours": ours_runner}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("engine", choices=sorted(RUNNERS))
    ap.add_argument("model_dir")
    ap.add_argument("--prompt-ids", required=True)
    ap.add_argument("--new-tokens", type=int, required=True)
    ap.add_argument("--threads", type=int)
    args = ap.parse_args()
    ids = json.loads(open(args.prompt_ids).read())
    t0 = time.perf_counter()
    run = RUNNERS[args.engine](args.model_dir, ids, args.new_tokens, args.threads)
    _emit({"ready": True, "engine": args.engine, "load_s": time.perf_counter() - t0, **INFO})
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "quit":
            break
        if cmd == "run":
            _emit(run())


if __name__ == "__main__":
    main()
