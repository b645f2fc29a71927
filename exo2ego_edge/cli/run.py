"""`exo2ego-edge run`: a thin click layer over :mod:`exo2ego_edge.runtime` (never imports torch)."""

from __future__ import annotations

import json

import click

from exo2ego_edge.assets import SHIPPED_BUNDLE


# Shared with `bench`: where a clip's frames are decoded (runtime.video.clip_decoder).
video_decoder_option = click.option(
    "--video-decoder", type=click.Choice(["auto", "software", "nvdec"]), default="auto", show_default=True,
    help="Video decoding: a Jetson's NVDEC through GStreamer where present (auto), or FFmpeg on the CPU.")


@click.command(name="run")
@click.option("--bundle", "bundle", type=click.Path(), default=str(SHIPPED_BUNDLE), show_default="the shipped egosim-tiny INT8 bundle",
              help="Bundle folder (from `export`).")
@click.option("--video", type=click.Path(), help="Video file (mp4/mkv/webm/avi; H.264/HEVC/VP9/MJPEG...).")
@click.option("--question", "-q", required=True, help="What to ask about the video.")
@click.option("--backend", type=click.Choice(["auto", "ort", "tensorrt"]), default="auto", show_default=True)
@click.option("--device", default="auto", show_default=True, help="ONNX Runtime provider: auto, cpu, cuda, tensorrt.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads per graph (ONNX Runtime).")
@video_decoder_option
@click.option("--stream/--no-stream", default=False, help="Print tokens as they are decoded.")
@click.option("--json", "as_json", is_flag=True, help="Print answer, token ids and per-stage timings as JSON.")
@click.option("--start", type=click.FloatRange(min=0), default=None, help="Window start in seconds (default: clip start).")
@click.option("--end", type=float, default=None, help="Window end in seconds (default: clip end).")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--temperature", type=float, default=0.0, show_default=True, help="0 = greedy.")
@click.option("--top-k", type=int, default=0, show_default=True)
@click.option("--top-p", type=float, default=1.0, show_default=True)
@click.option("--repetition-penalty", type=float, default=1.0, show_default=True)
@click.option("--seed", type=int, default=None, help="Seed for sampling (same seed, same answer).")
@click.option("--source", default=None, help="Live source: camera index, /dev/videoN, RTSP/HTTP URL, or a file played in real time.")
@click.option("--every", type=click.FloatRange(min=0, min_open=True), default=None,
              help="With --source: answer the question every K seconds.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True,
              help="Network source open/read time limit (s).")
def run(bundle: str, video: str | None, question: str, backend: str, device: str, threads: int | None,
        video_decoder: str, stream: bool, as_json: bool, start: float | None, end: float | None, max_new_tokens: int,
        temperature: float, top_k: int, top_p: float, repetition_penalty: float, seed: int | None,
        source: str | None, every: float | None, timeout: float) -> None:
    """Answer a question about an egocentric video (or a live source) with a bundle."""
    from exo2ego_edge.errors import UserError
    from exo2ego_edge.runtime import Runtime, Sampling

    if (video is None) == (source is None):
        raise UserError("give exactly one of --video (a file) or --source (a live source)")
    if source is not None and every is None:
        raise UserError("--source needs --every K (answer the standing question every K seconds)")
    if video is not None and every is not None:
        raise UserError("--every applies to --source only; --video answers once")
    sampling = Sampling(temperature, top_k, top_p, repetition_penalty, seed)
    rt = Runtime.load(bundle, backend=backend, device=device, threads=threads, video_decoder=video_decoder)
    if source is not None:
        _run_live(rt, source, question, every, max_new_tokens, sampling, as_json, timeout)
        return
    if stream and not as_json:
        answer_stream = rt.stream(video, question, max_new_tokens, sampling, start=start, end=end)
        for token in answer_stream:
            click.echo(token.text, nl=False)
        click.echo()
        return
    answer = rt.ask(video, question, max_new_tokens, sampling, start=start, end=end)
    click.echo(json.dumps(answer.to_dict(), indent=2) if as_json else answer.text)


def _run_live(rt, source: str, question: str, every: float, max_new_tokens: int, sampling,
              as_json: bool, timeout: float) -> None:
    from exo2ego_edge.runtime.live import answer_live, default_interval, open_source

    frames = open_source(source, rt.image_size, default_interval(every, rt.num_frames), timeout_s=timeout)
    for live in answer_live(rt, frames, question, every, max_new_tokens, sampling):
        if as_json:
            record = {"time_s": round(live.time_s, 3), "frames_encoded": live.frames_encoded, **live.answer.to_dict()}
            click.echo(json.dumps(record))
        else:
            click.echo(f"[{live.time_s:7.2f}s] {live.answer.text}")
