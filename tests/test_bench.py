"""The latency benchmark end to end on a random-weight egosim-tiny INT8 bundle built through the real
exporter (``--preset``'s path): schema, ordered positive percentiles, roofline fractions, the Jetson
projection, the CLI's files, and that ``bench --bundle`` runs with torch unimportable."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from exo2ego_edge.perf import harness as bench_harness

pytest.importorskip("torch")  # building the bundle needs the export layer


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    from exo2ego_edge.export.random_bundle import build_random_bundle

    return build_random_bundle("egosim-tiny", "int8", cache_dir=tmp_path_factory.mktemp("bundles"), max_frames=4)


@pytest.fixture(scope="module")
def small_clip(tmp_path_factory):
    # A short low-resolution clip keeps decode cheap; the default 640x480 4 s clip is for real runs.
    return bench_harness.synthetic_clip(tmp_path_factory.mktemp("clip") / "c.mp4", seconds=1.0, size=(160, 120))


@pytest.fixture(scope="module")
def report(tiny_bundle, small_clip):
    # Small STREAM arrays and GEMM: the test checks the arithmetic and schema, not this machine.
    config = bench_harness.BenchConfig(frames=[2, 4, 64], prompt_tokens=8, new_tokens=5, runs=3, warmup=1,
                                       video=str(small_clip), stream_bytes=16 << 20, gemm_size=256,
                                       contexts=[16, 128, 1 << 20], context_steps=4)
    ticks = []
    out = bench_harness.run_benchmark(tiny_bundle, config, progress=ticks.append)
    out["_ticks"] = ticks
    return out


def test_report_follows_the_schema(report):
    assert bench_harness.schema_problems(report) == []
    json.dumps(report)  # serialisable as is


def test_decode_is_timed_at_each_context_the_bundle_has_room_for(report):
    short, long, longest = report["decode_vs_context"]
    assert (short["context"], long["context"]) == (16, 128)
    # far past the bundle's limit: measured as close to it as leaves room for the 1 + 4 steps
    assert longest["requested"] == 1 << 20 and longest["context"] == report["bundle"]["decoder"]["max_seq"] - 5
    for row in (short, long, longest):
        s = row["decode_per_token_ms"]
        assert s["n"] == 4 and 0 < s["min"] <= s["p50"] <= s["max"]
    assert "## Decode against context length" in bench_harness.to_markdown(report)


def test_a_random_weight_bundle_says_so_and_loads_without_the_failed_parity_warning(report, tiny_bundle, caplog):
    from exo2ego_edge.runtime import Runtime

    assert report["bundle"]["random_weights"] is True  # recorded by the exporter, from the checkpoint
    with caplog.at_level("WARNING"):
        Runtime.load(tiny_bundle)
    assert "parity" not in caplog.text  # it fails parity by design: no warning to the user


def test_every_stage_has_ordered_positive_percentiles(report):
    measured = [r for r in report["results"] if "skipped" not in r]
    assert [r["frames"] for r in measured] == [2, 4]
    for res in measured:
        for stage in ("video_decode", "vision", "prefill", "ttft", "decode_per_token", "end_to_end"):
            s = res["stages_ms"][stage]
            assert 0 < s["p50"] <= s["p90"] <= s["p99"] <= s["max"], (stage, s)
        assert res["stages_ms"]["decode_per_token"]["n"] == 3 * (5 - 1)  # runs x decode steps
        assert res["stages_ms"]["ttft"]["p50"] < res["stages_ms"]["end_to_end"]["p50"]
        assert res["throughput"]["decode_tokens_per_s"] > 0 and res["throughput"]["frames_per_s"] > 0
        assert res["memory"]["peak_rss_bytes"] > 0


def test_oversized_frame_counts_are_skipped_with_a_reason(report):
    skipped = [r for r in report["results"] if "skipped" in r]
    assert len(skipped) == 1 and "max_frames" in skipped[0]["skipped"]
    assert report["_ticks"][-1] == 3 * 4  # progress counts every run, skipped settings included


def test_roofline_fractions_and_model_figures(report):
    rl = report["roofline"]
    assert rl["available"] and rl["bandwidth"]["best_gbps"] > 0
    assert rl["graphs"]["decoder"]["weight_bytes"] > 0
    two, four = (r for r in report["results"] if "skipped" not in r)
    for res in (two, four):
        d, v = res["roofline"]["decode"], res["roofline"]["vision"]
        assert d["bytes_per_token"]["total"] > d["bytes_per_token"]["weights"] > 0
        assert 0 < d["fraction_of_bandwidth_bound"] and 0 < v["fraction_of_compute_bound"]
        assert v["unresolved_nodes"] == 0
    # Vision FLOPs are per frame: twice the frames, twice the FLOPs.
    assert four["roofline"]["vision"]["flops"] == 2 * two["roofline"]["vision"]["flops"]
    proj = report["jetson_projection"]
    assert proj["kind"] == "projection" and len(proj["boards"]) == 4
    assert all(b["fits"] and b["decode_ms_per_token_lower_bound"] > 0 for b in proj["boards"])


def test_markdown_and_plot_render(report, tmp_path):
    md = bench_harness.to_markdown(report)
    assert "| decode_per_token |" in md and "Jetson projection (not a measurement)" in md
    pytest.importorskip("matplotlib")
    bench_harness.plot(report, tmp_path / "b.png")
    assert (tmp_path / "b.png").stat().st_size > 1000


def test_cli_writes_json_and_markdown(tiny_bundle, small_clip, tmp_path):
    from exo2ego_edge.cli import cli

    out, md = tmp_path / "out.json", tmp_path / "out.md"
    result = CliRunner().invoke(cli, ["bench", "--bundle", str(tiny_bundle), "--frames", "2", "--runs", "2", "--warmup", "0",
                                      "--new-tokens", "3", "--prompt-tokens", "4", "--no-roofline", "--video", str(small_clip),
                                      "--json", str(out), "--markdown", str(md)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["schema"] == bench_harness.SCHEMA and data["roofline"]["available"] is False
    assert md.read_text().startswith("# Benchmark")


def test_cli_defaults_to_frame_counts_the_bundle_takes_and_fails_when_nothing_ran(tiny_bundle, small_clip, tmp_path):
    from exo2ego_edge.cli import cli
    from exo2ego_edge.errors import UserError

    args = ["bench", "--bundle", str(tiny_bundle), "--runs", "1", "--warmup", "0", "--new-tokens", "2",
            "--no-roofline", "--video", str(small_clip), "--json", str(tmp_path / "b.json")]
    assert CliRunner().invoke(cli, args).exit_code == 0
    assert [r["frames"] for r in json.loads((tmp_path / "b.json").read_text())["results"]] == [4]  # its max_frames
    result = CliRunner().invoke(cli, [*args, "--frames", "8,16"])
    assert isinstance(result.exception, UserError) and "nothing was measured" in str(result.exception)


def test_cli_refuses_ambiguous_input():
    from exo2ego_edge.cli import cli

    result = CliRunner().invoke(cli, ["bench"])
    assert result.exit_code != 0
    # a decoder choice is an export option: it needs a bundle bench builds, at INT8
    for args in (["--bundle", "b"], ["--preset", "egosim-tiny", "--precision", "int4"]):
        result = CliRunner().invoke(cli, ["bench", *args, "--cpu-decoder", "hybrid"])
        assert result.exit_code != 0 and "--cpu-decoder chooses the decoder of a --preset bundle" in str(result.exception)


def test_bench_runs_without_torch(tiny_bundle, small_clip, tmp_path):
    # The runtime ships to a Jetson without torch: block it (and transformers/optimum) and bench.
    code = (
        "import sys\n"
        "for m in ('torch', 'transformers', 'optimum'):\n"
        "    sys.modules[m] = None\n"
        "from exo2ego_edge.cli import main\n"
        f"main(['bench', '--bundle', {str(tiny_bundle)!r}, '--frames', '2', '--runs', '1', '--warmup', '0',"
        f" '--new-tokens', '2', '--prompt-tokens', '4', '--video', {str(small_clip)!r},"
        f" '--json', {str(tmp_path / 'o.json')!r}])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads((tmp_path / "o.json").read_text())
    assert bench_harness.schema_problems(data) == []


def test_a_damaged_cached_bundle_is_rebuilt(tmp_path):
    from exo2ego_edge.bundle import load_manifest
    from exo2ego_edge.export.random_bundle import build_random_bundle

    first = build_random_bundle("egosim-tiny", "fp32", cache_dir=tmp_path, max_frames=4)
    (first / "manifest.json").unlink()  # e.g. a user tidied the cache by hand
    again = build_random_bundle("egosim-tiny", "fp32", cache_dir=tmp_path, max_frames=4)
    assert again == first and load_manifest(again, verify=True)


def test_contexts_past_the_bundle_limit_are_measured_once(tiny_bundle):
    from exo2ego_edge.runtime import Runtime

    rows = bench_harness.decode_vs_context(Runtime.load(tiny_bundle), [10**6, 10**7], steps=2, warmup=0)
    assert [(r["context"], r["requested"]) for r in rows] == [(Runtime.load(tiny_bundle).manifest.decoder.max_seq - 2, 10**6)]
