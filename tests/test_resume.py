"""Kill training with SIGKILL mid-stage, resume, and end exactly where an uninterrupted run ends."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from safetensors.torch import load_file

from exo2ego_edge.errors import UserError
from exo2ego_edge.train.trainer import run_training
from helpers.datasets import make_dataset, quick_overrides

STAGES = "init,1"
KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from exo2ego_edge.train.trainer import run_training

    def die(trainer):  # a hard kill right after the step that follows the step-4 checkpoint
        if trainer.stage == "init" and trainer.progress.step == 5:
            os.kill(os.getpid(), signal.SIGKILL)

    run_training("egosim-tiny-quick", stages="init,1", overrides=sys.argv[1:], on_step=die)
""")


def _metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.isa
def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    clips = make_dataset(tmp_path / "data")
    killed_out, clean_out = tmp_path / "killed" / "run", tmp_path / "clean" / "run"
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    proc = subprocess.run([sys.executable, str(script), *quick_overrides(clips, killed_out)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert (killed_out / "init" / "checkpoints" / "step-00000004").is_dir()
    assert not (killed_out / "init" / "final").exists()
    assert len(_metrics(killed_out / "init" / "metrics.jsonl")) == 5  # step 5 ran past the checkpoint

    with pytest.raises(UserError, match="--resume"):
        run_training("egosim-tiny-quick", stages=STAGES, overrides=quick_overrides(clips, killed_out))
    run_training("egosim-tiny-quick", stages=STAGES, overrides=quick_overrides(clips, killed_out), resume=True)
    run_training("egosim-tiny-quick", stages=STAGES, overrides=quick_overrides(clips, clean_out))

    for stage in ("init", "stage1"):
        a = load_file(killed_out / stage / "final" / "model.safetensors")
        b = load_file(clean_out / stage / "final" / "model.safetensors")
        assert a.keys() == b.keys()
        different = [k for k in a if not (a[k] == b[k]).all()]
        assert not different, f"{stage}: resumed weights differ in {different[:3]}"
        ma, mb = _metrics(killed_out / stage / "metrics.jsonl"), _metrics(clean_out / stage / "metrics.jsonl")
        assert [m["step"] for m in ma] == [m["step"] for m in mb] == list(range(1, len(mb) + 1))
        assert [m["loss"] for m in ma] == [m["loss"] for m in mb]
    info = json.loads((killed_out / "stage1" / "final" / "checkpoint.json").read_text())
    assert info["steps"] == 4

    # a second --resume of a finished run trains nothing and changes nothing
    before = (killed_out / "stage1" / "final" / "model.safetensors").stat().st_mtime_ns
    run_training("egosim-tiny-quick", stages=STAGES, overrides=quick_overrides(clips, killed_out), resume=True)
    assert (killed_out / "stage1" / "final" / "model.safetensors").stat().st_mtime_ns == before
