"""Cut Ego-ExoClip pairs and EgoIT-style instructions out of an Ego-Exo4D layout.

Every kept atomic description becomes a clip window of ``clip_len`` seconds centred on its
timestamp and clamped inside ``[0, duration]`` (so windows near the ends of a take are shorter,
not shifted). The window is paired with the take's ego video and with each usable exo camera
(or only the description's ``best_exo`` camera). Two JSONL files come out, both written
atomically, so a failed build never leaves either behind:

clips (one row per ego/exo pair)::

    {"take_uid", "take_name", "split", "ego_video", "exo_video", "exo_cam", "start", "end",
     "timestamp", "text", "text_side", "ego_visible", "is_best_exo"}

instructions (one row per question, ego only, for stage 3)::

    {"take_uid", "split", "ego_video", "start", "end", "question", "answer", "text_side",
     "verb", "object", "template", "text"}

Video paths are **absolute** (``os.path.abspath``, symlinks kept), so a JSONL file can be moved
or read from any working directory. Times are seconds rounded to milliseconds.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exo2ego_edge.atomic import atomic_file
from exo2ego_edge.data.egoexo4d import (
    Description,
    Take,
    VideoError,
    VideoInfo,
    available_splits,
    probe_video,
    read_descriptions,
    read_takes,
    resolve_video,
)
from exo2ego_edge.data.instructions import make_instructions, rewrite_wearer
from exo2ego_edge.errors import UserError
from exo2ego_edge.jsonl import read_jsonl

log = logging.getLogger(__name__)

DEFAULT_WEARER = "the camera wearer"
HIST_BIN_S = 0.1
# What every clip row holds (training refuses a row without one of them).
CLIP_KEYS = ("take_uid", "split", "ego_video", "exo_video", "start", "end", "text", "text_side")


@dataclass
class ClipReport:
    """What a build did, with every skip counted by reason (printed by the CLI)."""

    split: str
    root: Path
    out: Path
    instructions_out: Path
    clip_len: float
    best_exo_only: bool
    takes_with_descriptions: int = 0  # takes that have kept descriptions in this split
    takes_used: int = 0
    takes_skipped: Counter = field(default_factory=Counter)  # reason -> takes
    descriptions_read: int = 0
    descriptions_used: int = 0
    descriptions_dropped: Counter = field(default_factory=Counter)  # reason -> descriptions
    clip_rows_skipped: Counter = field(default_factory=Counter)  # best-exo reasons -> rows
    videos_probed: int = 0
    bad_videos: list[tuple[str, str]] = field(default_factory=list)  # (path, problem), as warned
    exo_cams_skipped: int = 0  # bad exo cameras of takes that were still used
    clips: int = 0
    instructions: int = 0
    instructions_generic: int = 0  # descriptions answered only by the generic template
    instructions_unparsed: int = 0  # descriptions that gave no instruction at all
    text_sides: Counter = field(default_factory=Counter)  # text_side -> clip rows

    def summary(self) -> str:
        """A few human-readable lines for the terminal."""

        def fmt(c: Counter) -> str:
            return ", ".join(f"{k}: {v}" for k, v in sorted(c.items())) or "none"

        return "\n".join(
            [
                f"split {self.split}: {self.clips} clip pairs -> {self.out}",
                f"  {self.instructions} instructions -> {self.instructions_out}"
                f" ({self.instructions_generic} generic,"
                f" {self.instructions_unparsed} descriptions without one)",
                f"  takes: {self.takes_used} used of {self.takes_with_descriptions};"
                f" skipped: {fmt(self.takes_skipped)}",
                f"  descriptions: {self.descriptions_used} used of {self.descriptions_read};"
                f" dropped: {fmt(self.descriptions_dropped)}",
                f"  videos: {self.videos_probed} probed, {len(self.bad_videos)} bad,"
                f" {self.exo_cams_skipped} exo cameras skipped in used takes",
                f"  clip rows skipped: {fmt(self.clip_rows_skipped)}",
                f"  rows per text_side: {fmt(self.text_sides)}",
            ]
        )


@dataclass
class _TakePlan:
    take: Take
    descriptions: list[Description]
    ego: Path | None
    exo: dict[str, Path]  # cam_id -> path, cameras this build needs


# ----------------------------------------------------------------------------- helpers


def clip_window(timestamp: float, clip_len: float, duration: float | None) -> tuple[float, float]:
    """``clip_len`` seconds centred on ``timestamp``, clamped inside ``[0, duration]``."""
    start = max(0.0, timestamp - clip_len / 2)
    end = timestamp + clip_len / 2
    if duration is not None:
        end = min(duration, end)
    return round(start, 3), round(end, 3)


def default_instructions_path(out: str | os.PathLike) -> Path:
    """``clips.jsonl`` -> ``clips.instructions.jsonl`` (same folder)."""
    out = Path(out)
    return out.with_name(f"{out.stem}.instructions.jsonl")


def _fmt_counter(c: Counter) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(c.items()))


def _abs(path: Path) -> str:
    return os.path.abspath(path)


# ----------------------------------------------------------------------------- build


def build_clips(
    root: str | os.PathLike,
    split: str,
    out: str | os.PathLike,
    clip_len: float = 1.0,
    best_exo_only: bool = False,
    wearer: str = DEFAULT_WEARER,
    instructions_out: str | os.PathLike | None = None,
    progress: bool = True,
) -> ClipReport:
    """Write the Ego-ExoClip JSONL for ``split`` to ``out`` and instructions beside it.

    ``instructions_out`` defaults to ``<out stem>.instructions.jsonl``. Missing or corrupt
    videos skip their take (or just that exo camera) with one warning line each. Raises
    UserError for bad input and when no clip survives; then neither file is written.
    """
    if not (isinstance(clip_len, (int, float)) and math.isfinite(clip_len) and clip_len > 0):
        raise UserError(f"--clip-len must be a positive number of seconds, got {clip_len}")
    if not wearer.strip():
        raise UserError("--wearer must not be empty")
    out = Path(out)
    instr = default_instructions_path(out) if instructions_out is None else Path(instructions_out)
    if os.path.abspath(out) == os.path.abspath(instr):
        raise UserError(f"clips and instructions would both be written to {out}")
    for p in (out, instr):
        if p.is_dir():
            raise UserError(f"output {p} is a folder")

    root = Path(os.path.abspath(root))
    takes = read_takes(root)
    descs = read_descriptions(root, split)
    report = ClipReport(split, root, out, instr, float(clip_len), best_exo_only)
    report.descriptions_read = descs.total
    report.descriptions_dropped.update(descs.dropped)
    report.takes_with_descriptions = len(descs.by_take)

    plans = _plan(root, takes, descs.by_take, best_exo_only, report)
    probes = _probe_all(plans, report, progress)

    try:
        with atomic_file(out) as fc, atomic_file(instr) as fi:
            for plan in plans:
                _write_take(plan, probes, split, clip_len, best_exo_only, wearer, fc, fi, report)
            if report.clips == 0:
                # Raising inside the block discards both temp files: no empty outputs.
                raise UserError(
                    f"no usable clips for split {split!r} under {root}"
                    f" (takes skipped: {_fmt_counter(report.takes_skipped) or 'none'};"
                    f" descriptions dropped: {_fmt_counter(report.descriptions_dropped) or 'none'};"
                    f" clip rows skipped: {_fmt_counter(report.clip_rows_skipped) or 'none'})"
                )
    except OSError as e:
        raise UserError(f"cannot write {e.filename or out}: {e.strerror or e}") from None
    log.info(
        "wrote %d clips to %s and %d instructions to %s", report.clips, out, report.instructions, instr
    )
    return report


def split_clip_files(root: str | os.PathLike, out_dir: str | os.PathLike) -> list[str]:
    """``out_dir/{train,val}.jsonl`` (instructions beside them), built from ``root`` unless they
    already exist: what a training run's ``data.clips`` needs."""
    paths = []
    for split in ("train", "val"):
        path = Path(out_dir) / f"{split}.jsonl"
        if not path.is_file():
            build_clips(root, split, path, progress=False)
        paths.append(str(path))
    return paths


def _plan(
    root: Path,
    takes: dict[str, Take],
    by_take: dict[str, list[Description]],
    best_exo_only: bool,
    report: ClipReport,
) -> list[_TakePlan]:
    """Decide which videos each take needs, skipping takes that cannot work at all."""
    plans: list[_TakePlan] = []
    for uid, descriptions in by_take.items():
        take = takes.get(uid)
        if take is None:
            # Annotated but not in takes.json (e.g. a partial takes.json): nothing to pair with.
            report.takes_skipped["not_in_takes_json"] += 1
            report.descriptions_dropped["take_skipped"] += len(descriptions)
            continue
        ego_cam = take.ego_cam
        if ego_cam is None:
            log.warning("take %s skipped: takes.json lists no ego (aria rgb) video", take.take_name)
            report.takes_skipped["no_ego_camera"] += 1
            report.descriptions_dropped["take_skipped"] += len(descriptions)
            continue
        cams = take.exo_cams
        reason, why = "no_exo_camera", "takes.json lists no exo camera video"
        if best_exo_only and cams:
            # Probe only the cameras some row will reference.
            wanted = {d.best_exo or take.best_exo for d in descriptions}
            cams = [c for c in cams if c in wanted]
            reason, why = "no_best_exo", "no description names a best exo camera the take has"
        exo = {c: p for c in cams if (p := resolve_video(root, take, c)) is not None}
        if not exo:
            log.warning("take %s skipped: %s", take.take_name, why)
            report.takes_skipped[reason] += 1
            report.descriptions_dropped["take_skipped"] += len(descriptions)
            continue
        plans.append(_TakePlan(take, descriptions, resolve_video(root, take, ego_cam), exo))
    return plans


def _probe_all(
    plans: list[_TakePlan], report: ClipReport, progress: bool
) -> dict[Path, VideoInfo | VideoError]:
    """Probe every referenced mp4 at most once (a bar: real takes have thousands).

    A take's exo videos are not probed when its ego video is bad: the take is skipped anyway.
    """
    from tqdm import tqdm  # a workstation dependency: the benchmark readers import this module too

    results: dict[Path, VideoInfo | VideoError] = {}

    def probe(path: Path) -> VideoInfo | VideoError:
        if path not in results:
            try:
                results[path] = probe_video(path)
            except VideoError as e:
                results[path] = e
        return results[path]

    total = len({p for plan in plans for p in (plan.ego, *plan.exo.values()) if p})
    # disable=None: the bar shows on a terminal only, so logs and CI output stay clean.
    disable = None if progress else True
    with tqdm(total=total, desc="probing videos", unit="video", disable=disable) as bar:
        for plan in plans:
            if plan.ego is None or not isinstance(probe(plan.ego), VideoInfo):
                bar.update((1 if plan.ego else 0) + len(plan.exo))
                continue
            bar.update(1)
            for path in plan.exo.values():
                probe(path)
                bar.update(1)
    report.videos_probed = len(results)
    return results


def _write_take(
    plan: _TakePlan,
    probes: dict[Path, VideoInfo | VideoError],
    split: str,
    clip_len: float,
    best_exo_only: bool,
    wearer: str,
    fc: Any,
    fi: Any,
    report: ClipReport,
) -> None:
    take, n_desc = plan.take, len(plan.descriptions)
    ego = probes.get(plan.ego) if plan.ego is not None else VideoError("not listed")
    if not isinstance(ego, VideoInfo):
        log.warning("take %s skipped: ego video %s: %s", take.take_name, plan.ego, ego)
        if plan.ego is not None:
            report.bad_videos.append((_abs(plan.ego), str(ego)))
        report.takes_skipped["ego_video_bad"] += 1
        report.descriptions_dropped["take_skipped"] += n_desc
        return
    good: dict[str, Path] = {}
    bad = 0
    for cam, path in plan.exo.items():
        probe = probes[path]
        if isinstance(probe, VideoInfo):
            good[cam] = path
        else:
            bad += 1
            log.warning("take %s: exo camera %s skipped: %s: %s", take.take_name, cam, path, probe)
            report.bad_videos.append((_abs(path), str(probe)))
    if not good:
        log.warning("take %s skipped: none of its exo videos is usable", take.take_name)
        report.takes_skipped["exo_videos_bad"] += 1
        report.descriptions_dropped["take_skipped"] += n_desc
        return
    report.exo_cams_skipped += bad
    report.takes_used += 1
    # takes.json's duration is the frame-aligned take length; the probe is the fallback.
    duration = take.duration_sec if take.duration_sec is not None else ego.duration
    ego_path = _abs(ego.path)
    for d in plan.descriptions:
        if d.timestamp < 0 or (duration is not None and d.timestamp > duration):
            report.descriptions_dropped["timestamp_outside_take"] += 1
            continue
        start, end = clip_window(d.timestamp, clip_len, duration)
        text = rewrite_wearer(d.text, wearer)
        best = d.best_exo or take.best_exo
        if best_exo_only:
            if best is None:
                report.clip_rows_skipped["no_best_exo"] += 1
                cams: list[str] = []
            elif best not in good:
                reason = "best_exo_bad_video" if best in plan.exo else "best_exo_not_in_take"
                report.clip_rows_skipped[reason] += 1
                cams = []
            else:
                cams = [best]
        else:
            cams = list(good)
        report.descriptions_used += 1
        for cam in cams:
            row = {
                "take_uid": take.take_uid,
                "take_name": take.take_name,
                "split": split,
                "ego_video": ego_path,
                "exo_video": _abs(good[cam]),
                "exo_cam": cam,
                "start": start,
                "end": end,
                "timestamp": round(d.timestamp, 3),
                "text": text,
                "text_side": take.text_side,
                "ego_visible": d.ego_visible,
                "is_best_exo": cam == best,
            }
            fc.write(json.dumps(row, ensure_ascii=False) + "\n")
            report.clips += 1
            report.text_sides[take.text_side] += 1
        # Instructions are about the ego clip alone, so they do not depend on exo rows.
        instructions = make_instructions(d.text)
        if not instructions:
            report.instructions_unparsed += 1
        elif instructions[0].template == "generic":
            report.instructions_generic += 1
        for ins in instructions:
            row = {
                "take_uid": take.take_uid,
                "split": split,
                "ego_video": ego_path,
                "start": start,
                "end": end,
                "question": ins.question,
                "answer": ins.answer,
                "text_side": take.text_side,
                "verb": ins.verb,
                "object": ins.object,
                "template": ins.template,
                "text": text,
            }
            fi.write(json.dumps(row, ensure_ascii=False) + "\n")
            report.instructions += 1


# ----------------------------------------------------------------------------- stats


def dataset_stats(
    root: str | os.PathLike, clips: str | os.PathLike | None = None
) -> dict[str, Any]:
    """Counts for ``data stats``: per split from the annotations, and from a clips JSONL if given.

    No video is opened, so this is fast even on the full download.
    """
    root = Path(root)
    takes = read_takes(root)
    out: dict[str, Any] = {"root": _abs(root), "takes": len(takes), "splits": {}, "clips": None}
    for split in available_splits(root):
        d = read_descriptions(root, split)
        out["splits"][split] = {
            "takes": len(d.by_take),
            "takes_not_in_takes_json": sum(1 for uid in d.by_take if uid not in takes),
            "annotations": d.annotations,
            "annotations_rejected": d.annotations_rejected,
            "descriptions": d.total,
            "kept": d.kept,
            "dropped": dict(sorted(d.dropped.items())),
        }
    if clips is not None:
        rows = read_jsonl(clips, CLIP_KEYS)
        if not rows:
            raise UserError(f"{clips}: no clip rows")
        out["clips"] = clip_stats(rows, path=clips)
    return out


def clip_stats(rows: list[dict[str, Any]], path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Rows, pairs, text sides and a clip-length histogram of clip rows."""
    lengths = [float(r["end"]) - float(r["start"]) for r in rows if "start" in r and "end" in r]
    hist: list[dict[str, float | int]] = []
    if lengths:
        # Bins are (lo, hi]: a 1.0 s clip lands in 0.9-1.0, not in a bin of its own.
        n_bins = max(1, math.ceil(round(max(lengths) / HIST_BIN_S, 6)))
        counts = [0] * n_bins
        for length in lengths:
            counts[min(n_bins - 1, max(0, math.ceil(round(length / HIST_BIN_S, 6)) - 1))] += 1
        hist = [
            {"lo": round(i * HIST_BIN_S, 3), "hi": round((i + 1) * HIST_BIN_S, 3), "count": c}
            for i, c in enumerate(counts)
        ]
    return {
        "path": _abs(Path(path)) if path is not None else None,
        "rows": len(rows),
        "ego_exo_pairs": len(rows),
        "camera_pairs": len({(r.get("ego_video"), r.get("exo_video")) for r in rows}),
        "takes": len({r.get("take_uid") for r in rows}),
        "by_split": dict(sorted(Counter(str(r.get("split")) for r in rows).items())),
        "by_text_side": dict(sorted(Counter(str(r.get("text_side")) for r in rows).items())),
        "mean_length": round(sum(lengths) / len(lengths), 3) if lengths else None,
        "length_histogram": hist,
    }


def format_stats(stats: dict[str, Any], width: int = 40) -> str:
    """Render :func:`dataset_stats` as text with histogram bars."""
    lines = [f"root {stats['root']}: {stats['takes']} takes in takes.json"]
    if not stats["splits"]:
        lines.append("  no annotations/atomic_descriptions_<split>.json files")
    for split, s in stats["splits"].items():
        dropped = ", ".join(f"{k} {v}" for k, v in s["dropped"].items()) or "none"
        lines.append(
            f"split {split}: {s['takes']} takes ({s['takes_not_in_takes_json']} not in takes.json),"
            f" {s['annotations']} annotations ({s['annotations_rejected']} rejected),"
            f" {s['descriptions']} descriptions: {s['kept']} kept, dropped: {dropped}"
        )
    c = stats.get("clips")
    if c is None:
        lines.append("(pass --clips CLIPS.jsonl for clip lengths, pairs and text sides)")
        return "\n".join(lines)
    lines.append(
        f"clips {c['path']}: {c['rows']} ego/exo pairs from {c['takes']} takes,"
        f" {c['camera_pairs']} distinct ego/exo camera pairs, mean length {c['mean_length']} s"
    )
    for key, label in (("by_split", "split"), ("by_text_side", "text_side")):
        counts = ", ".join(f"{k} {v}" for k, v in c[key].items()) or "none"
        lines.append(f"  rows per {label}: {counts}")
    if c["length_histogram"]:
        lines.append("  clip length (s):")
        top = max(b["count"] for b in c["length_histogram"]) or 1
        for b in c["length_histogram"]:
            bar = "#" * (round(width * b["count"] / top) if b["count"] else 0)
            lines.append(f"    {b['lo']:4.1f}-{b['hi']:<4.1f} {b['count']:>7} {bar}")
    return "\n".join(lines)
