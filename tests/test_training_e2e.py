"""Simulated world -> clips -> `exo2ego-edge train` (all stages, quick config) -> student answers."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_simulated_world_to_student(tmp_path):
    from exo2ego_edge.model import load_student
    from exo2ego_edge.data.clips import split_clip_files
    from exo2ego_edge.train.evaluation import DOING_QUESTION, answer_questions
    from exo2ego_edge.data.simulator import synthesize_world

    world = tmp_path / "world"
    synthesize_world(world, takes=4, size=32, val_frac=0.25, exo_text_frac=0.5, ego_text_frac=0.25)
    clips = split_clip_files(world, tmp_path / "clips")

    cli = Path(sys.executable).with_name("exo2ego-edge")
    out = tmp_path / "run"
    args = [str(cli), "train", "--config", "egosim-tiny-quick", f"data.clips=[{','.join(clips)}]",
            f"run.output_dir={out}"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    *stage_lines, last = proc.stdout.strip().splitlines()
    assert last == f"student checkpoint: {out / 'student'}"
    assert [line.split(":")[0] for line in stage_lines] == ["init", "stage1", "stage2", "stage3"]
    for stage in ("init", "stage1", "stage2", "stage3"):
        summary = json.loads((out / stage / "summary.json").read_text())
        assert summary["steps"] > 0 and "eval" in summary
    # init's one tower ends up in both encoders: the learner starts from a tower that saw ego video
    from safetensors.torch import load_file

    init = load_file(out / "init" / "final" / "model.safetensors")
    exo_keys = [k for k in init if k.startswith("exo_encoder.")]
    assert exo_keys and all(init[k].equal(init["ego_" + k[4:]]) for k in exo_keys)
    stage2 = [json.loads(line) for line in (out / "stage2" / "metrics.jsonl").read_text().splitlines()]
    assert {"vtg", "kl", "cycle", "loss", "lr", "samples_per_s"} <= set(stage2[-1])

    student = load_student(out / "student")
    model, tok = student.model, student.tokenizer
    import numpy as np
    frames_file = next((tmp_path / "clips" / "frame_cache").glob("val.instructions-*.ego.*.npy"))
    from exo2ego_edge.train.run_config import load_config

    pool = load_config("egosim-tiny-quick").data.frame_pool  # candidates per frame; the middle one is served
    cached = np.load(frames_file)[:2]
    frames = __import__("torch").from_numpy(cached[:, pool // 2 :: pool].copy())
    answers = answer_questions(model, tok, frames, [DOING_QUESTION] * 2)
    assert len(answers) == 2

    # A user error is one line and exit status 2, naming the bad key.
    bad = subprocess.run([*args, "stage2.kl_wieght=0.5"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "stage2.kl_wieght" in bad.stderr
