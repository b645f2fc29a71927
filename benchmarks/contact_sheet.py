"""Contact sheet of the simulator: ego frames next to exo frames over time, for a few takes.

    python benchmarks/contact_sheet.py [--out docs/sim_contact_sheet.png] [--takes 3] [--seed 0]

Each take gets one row per camera (aria01 = ego, cam01.. = exo) and one column per sampled time;
the atomic description running at that time is printed above each column.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from exo2ego_edge.data.simulator import synthesize_world

LABEL_W, CAPTION_H, GAP = 70, 30, 4


def decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def action_at(record: dict, t: float) -> str:
    for a in record["actions"]:
        if a["start"] <= t < a["end"]:
            return a["text"]
    return "(between actions)"


def take_block(root: Path, take: dict, record: dict, columns: int, scale: int, font) -> Image.Image:
    """One take: rows = cameras, columns = evenly spaced frames, captioned with time + action."""
    videos = {
        cam: decode(root / take["root_dir"] / stream["relative_path"])
        for cam, streams in take["frame_aligned_videos"].items()
        for stream in streams.values()
    }
    n = min(len(v) for v in videos.values())
    picks = np.linspace(0, n - 1, columns + 2).round().astype(int)[1:-1]
    side = next(iter(videos.values()))[0].shape[0] * scale
    width = LABEL_W + columns * (side + GAP)
    height = 2 * CAPTION_H + 8 + len(videos) * (side + GAP)
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((4, 4), f"{take['take_name']}  -  goal: {record['goal']}", fill="black", font=font)
    for col, f in enumerate(picks):
        t = f / record["fps"]
        x = LABEL_W + col * (side + GAP)
        caption = action_at(record, t).removeprefix("C ").rstrip(".")
        words, lines = caption.split(), [""]
        for w in words:  # wrap the caption to the column width
            if draw.textlength(f"{lines[-1]} {w}", font=font) > side and lines[-1]:
                lines.append(w)
            else:
                lines[-1] = f"{lines[-1]} {w}".strip()
        draw.text((x, CAPTION_H - 12), f"t={t:.1f}s", fill="black", font=font)
        draw.text((x, CAPTION_H), "\n".join(lines[:3]), fill=(40, 40, 160), font=font)
    for row, (cam, frames) in enumerate(videos.items()):
        y = 2 * CAPTION_H + 8 + row * (side + GAP)
        view = "EGO" if cam == "aria01" else "exo"
        draw.text((4, y + side // 2 - 10), f"{view}\n{cam}", fill="black", font=font)
        for col, f in enumerate(picks):
            img = Image.fromarray(frames[f]).resize((side, side), Image.NEAREST)
            sheet.paste(img, (LABEL_W + col * (side + GAP), y))
    return sheet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/sim_contact_sheet.png")
    parser.add_argument("--takes", type=int, default=3)
    parser.add_argument("--seed", type=int, default=3)  # its takes include a head turn
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--columns", type=int, default=8)
    parser.add_argument("--scale", type=int, default=1)
    args = parser.parse_args()
    font = ImageFont.load_default()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "world"
        synthesize_world(root, takes=args.takes, seed=args.seed, size=args.size, val_frac=0.0,
                         progress=False)  # fmt: skip
        takes = json.loads((root / "takes.json").read_text())
        lines = (root / "simulator" / "take_records.jsonl").read_text().splitlines()
        records = {r["take_uid"]: r for r in map(json.loads, lines)}
        blocks = [take_block(root, t, records[t["take_uid"]], args.columns, args.scale, font)
                  for t in takes]  # fmt: skip
    sheet = Image.new("RGB", (max(b.width for b in blocks), sum(b.height + 10 for b in blocks)),
                      "white")  # fmt: skip
    y = 0
    for block in blocks:
        sheet.paste(block, (0, y))
        y += block.height + 10
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    print(f"wrote {args.out} ({sheet.width}x{sheet.height}, {len(blocks)} takes)")


if __name__ == "__main__":
    main()
