"""Bad input is refused in one line, before work that a later refusal would waste."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from exo2ego_edge.assets import SHIPPED_STUDENT
from exo2ego_edge.bundle import BundleError, read_manifest
from exo2ego_edge.cli import cli
from exo2ego_edge.errors import UserError
from exo2ego_edge.train.run_config import load_config
from exo2ego_edge.train.trainer import run_training
from helpers.datasets import make_dataset, quick_overrides


@pytest.mark.parametrize("override, message", [
    ("stage3.text_sides=[]", "stage3 takes those in stage3.text_sides"),
    ("stage1.batch_size=10000", "lower stage1.batch_size"),
])
def test_every_stage_s_data_is_checked_before_the_first_stage_trains(tmp_path, override, message):
    clips = make_dataset(tmp_path / "data")
    out = tmp_path / "run"
    with pytest.raises(UserError, match=message):
        run_training("egosim-tiny-quick", stages="init,1,2,3", overrides=quick_overrides(clips, out, override))
    assert not (out / "init").exists()


def test_a_missing_clips_file_leaves_no_run_folder_and_a_file_is_not_a_run_folder(tmp_path):
    with pytest.raises(UserError):
        run_training("egosim-tiny-quick", overrides=quick_overrides([str(tmp_path / "nope.jsonl")], tmp_path / "run"))
    assert not (tmp_path / "run").exists()
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        run_training("egosim-tiny-quick", overrides=quick_overrides([str(tmp_path / "nope.jsonl")], tmp_path / "afile"))


def test_an_unclosed_list_override_is_a_syntax_error():
    with pytest.raises(UserError, match="not a valid YAML list"):
        load_config("egosim-tiny-quick", ["data.clips=[a.jsonl"])


def test_a_checkpoint_given_as_a_bundle_says_how_to_export_it():
    with pytest.raises(BundleError, match="is a checkpoint, not a bundle: export it first"):
        read_manifest(SHIPPED_STUDENT)


@pytest.mark.parametrize("args, message", [
    (["run", "--video", "x.mp4", "-q", "hi", "--every", "1"], "--every applies to --source only"),
    (["run", "--source", "x.mp4", "-q", "hi", "--every", "-2"], "--every"),
    (["run", "--video", "x.mp4", "-q", "hi", "--threads", "0"], "--threads"),
])
def test_run_refuses_nonsense_options_naming_the_flag(args, message):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code != 0 and message in (result.output + str(result.exception))


def test_eval_refuses_cuda_without_a_gpu_in_one_line(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible")
    result = CliRunner().invoke(cli, ["eval", "--checkpoint", str(SHIPPED_STUDENT), "--suite", "egosim",
                                      "--data", str(tmp_path), "--device", "cuda"])
    assert isinstance(result.exception, UserError) and "PyTorch sees no CUDA GPU" in str(result.exception)


def test_build_clips_does_not_replace_its_output_without_overwrite(tmp_path):
    out = tmp_path / "c.jsonl"
    out.write_text("mine\n")
    result = CliRunner().invoke(cli, ["data", "build-clips", "--root", str(tmp_path), "--out", str(out)])
    assert isinstance(result.exception, UserError) and "--overwrite" in str(result.exception)
    assert out.read_text() == "mine\n"


def test_a_world_without_training_takes_is_refused(tmp_path):
    from exo2ego_edge.data.simulator import synthesize_world

    with pytest.raises(UserError, match="leaves no training take"):
        synthesize_world(tmp_path / "w", takes=3, val_frac=0.9)
    assert not (tmp_path / "w").exists()


def test_data_stats_refuses_an_empty_or_malformed_clips_file(tmp_path):
    from exo2ego_edge.data.clips import dataset_stats
    from exo2ego_edge.data.simulator import synthesize_world

    synthesize_world(tmp_path / "w", takes=2, val_frac=0.5, jobs=1, progress=False)
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "bad.jsonl").write_text('{"split": "train"}\n')
    with pytest.raises(UserError, match="no clip rows"):
        dataset_stats(tmp_path / "w", tmp_path / "empty.jsonl")
    with pytest.raises(UserError, match="line 1: row lacks take_uid"):
        dataset_stats(tmp_path / "w", tmp_path / "bad.jsonl")
