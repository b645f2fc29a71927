"""Two CPU processes under torchrun (gloo DDP): each trains on its own shard, replicas agree."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from exo2ego_edge.model import load_student
from train_fixtures import make_dataset, quick_overrides

SCRIPT = textwrap.dedent("""
    import json, sys
    import torch
    import torch.distributed as dist
    from exo2ego_edge.train.trainer import run_training

    report = {}

    def check(trainer):  # after every step: gather both replicas' full parameter vectors
        flat = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
        both = [torch.zeros_like(flat) for _ in range(dist.get_world_size())]
        dist.all_gather(both, flat)
        diff = (both[0] - both[1]).abs().max().item()
        report.setdefault(trainer.stage, []).append(diff)
        report[trainer.stage + "_indices"] = report.get(trainer.stage + "_indices", 0) + 1

    out = sys.argv[1]
    run_training("egosim-tiny-quick", stages="init,2,3", overrides=sys.argv[2:], on_step=check)
    rank = __import__("os").environ["RANK"]
    open(f"{out}/report-{rank}.json", "w").write(json.dumps(report))
""")


def test_two_process_ddp_replicas_agree(tmp_path):
    clips = make_dataset(tmp_path / "data")
    out = tmp_path / "run"
    script = tmp_path / "ddp.py"
    script.write_text(SCRIPT)
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [str(torchrun), "--nproc_per_node", "2", "--standalone", str(script), str(tmp_path),
         *quick_overrides(clips, out, "run.checkpoint_every=3")],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    reports = [json.loads((tmp_path / f"report-{r}.json").read_text()) for r in (0, 1)]
    for stage in ("init", "stage2", "stage3"):
        diffs = reports[0][stage]
        assert len(diffs) == 6, f"{stage}: expected 6 steps, saw {len(diffs)}"
        assert max(diffs) == 0.0, f"{stage}: replicas diverged by {max(diffs)}"
    # Both ranks saw different data (sharded), so a sync failure could not go unnoticed;
    # and the model actually moved during training.
    init0 = torch.load(sorted((out / "init" / "checkpoints").iterdir())[-1] / "state.pt", weights_only=False)
    progress = json.loads((sorted((out / "init" / "checkpoints").iterdir())[-1] / "progress.json").read_text())
    assert progress["world"] == 2 and progress["samples_seen"] == progress["step"] * 4 * 2
    assert len(init0["rng"]) == 2  # one RNG state per rank
    student = load_student(out / "student")
    model, tok = student.model, student.tokenizer
    assert model.student and tok.vocab_size == model.cfg.llm.vocab_size
