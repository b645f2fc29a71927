"""A tiny Ego-ExoClip dataset (real H.264 mp4s + JSONL rows) for the training tests, in < 1 s.

The simulator makes more realistic worlds (used by the slow end-to-end test); these rows only
have to exercise every data regime: text_side exo / ego / none / all, train and val, clips and
instructions.
"""

from __future__ import annotations

import json
from pathlib import Path

from helpers.videos import write_test_mp4

ACTIONS = [("pick up", "picks up", "picking up", "cup"), ("push", "pushes", "pushing", "bowl"),
           ("open", "opens", "opening", "box")]
SIDES = ["exo", "ego", "none", "all"]


def make_dataset(folder: Path, videos: int = 4, clips_per_video: int = 6) -> list[str]:
    """Write videos + clips/instruction JSONL under ``folder``; returns the clips files."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for split in ("train", "val"):
        clips, instr = [], []
        n_videos = videos if split == "train" else 1
        for v in range(n_videos):
            ego = write_test_mp4(folder / f"{split}{v}_ego.mp4", frames=30, size=(48, 48), fps=10, seed=v)
            exo = write_test_mp4(folder / f"{split}{v}_exo.mp4", frames=30, size=(48, 48), fps=10, seed=100 + v)
            for c in range(clips_per_video):
                verb, verb_s, verb_ing, obj = ACTIONS[(v + c) % len(ACTIONS)]
                side = "all" if split == "val" else SIDES[(v + c) % len(SIDES)]
                start = round(c * 0.45, 3)
                base = {"take_uid": f"{split}{v}", "split": split, "ego_video": str(ego),
                        "start": start, "end": round(start + 0.5, 3), "text_side": side}
                clips.append({**base, "take_name": f"take{v}", "exo_video": str(exo), "exo_cam": "cam01",
                              "text": f"The camera wearer {verb_s} the red {obj}."})
                instr.append({**base, "question": "What am I doing?", "answer": f"I am {verb_ing} the red {obj}.",
                              "verb": verb, "object": obj, "template": "doing"})
        files[split] = folder / f"{split}.jsonl"
        files[split].write_text("".join(json.dumps(r) + "\n" for r in clips))
        (folder / f"{split}.instructions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in instr))
    return [str(files["train"]), str(files["val"])]


def quick_overrides(clips: list[str], out: Path, *extra: str) -> list[str]:
    return [f"data.clips=[{','.join(clips)}]", f"run.output_dir={out}", f"data.cache_dir={out.parent / 'cache'}",
            *extra]


def save_tiny_vision_tower(kind: str, folder: Path):
    """A random SigLIP / CLIP vision model with the quick config's dims, saved like a real checkpoint."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModel, SiglipVisionConfig, SiglipVisionModel

    dims = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                intermediate_size=64)
    torch.manual_seed(1)
    model = (SiglipVisionModel(SiglipVisionConfig(**dims)) if kind == "siglip"
             else CLIPVisionModel(CLIPVisionConfig(**dims)))
    model.save_pretrained(folder)
    return model
