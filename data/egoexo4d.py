"""Read the Ego-Exo4D on-disk layout (the real download or the built-in simulator's output).

Layout::

    ROOT/takes.json                                  list of take objects
    ROOT/annotations/atomic_descriptions_<split>.json
    ROOT/<take.root_dir>/frame_aligned_videos/aria01_214-1.mp4          ego (aria01, stream "rgb")
    ROOT/<take.root_dir>/frame_aligned_videos/cam01.mp4                 exo (camNN, stream "0")
    ROOT/<take.root_dir>/frame_aligned_videos/downscaled/448/<same name> preferred when present

The real files have quirks this module absorbs so that nothing above it has to: flags stored as
booleans, 0/1, "0"/"1" or "true"/"false"; the subject key spelled ``subject`` or
``narration_subject``; ``best_exo`` as ``{"cam_id": ...}``, a bare string or null; takes without
the simulator's ``sim_text_side`` key (treated as ``"all"``).

Bad input the user must fix (missing root, malformed JSON, missing split file) raises
:class:`~exo2ego_edge.errors.UserError` with a one-line message naming the file.
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

from exo2ego_edge.errors import UserError, VideoError

log = logging.getLogger(__name__)

TEXT_SIDES = ("exo", "ego", "none", "all")
EGO_STREAM = "rgb"
EXO_STREAM = "0"
DOWNSCALED_DIR = ("downscaled", "448")
# Keys of frame_aligned_videos that are neither the ego camera nor a real exo camera view.
_NOT_EXO = {"collage", "best_exo"}


# ----------------------------------------------------------------------------- data classes


@dataclass(frozen=True)
class Take:
    """One recording session: an ego (Aria) camera plus several static exo cameras."""

    take_uid: str
    take_name: str
    root_dir: str
    task_name: str | None
    duration_sec: float | None
    # cam_id -> stream_id -> relative path (relative to ROOT/root_dir)
    videos: dict[str, dict[str, str]]
    text_side: str = "all"
    best_exo: str | None = None  # take-level best exo camera (real takes.json has one)

    @property
    def ego_cam(self) -> str | None:
        """The Aria camera with an RGB stream (``aria01`` in practice, but not always 01)."""
        for cam in sorted(self.videos):
            if cam.startswith("aria") and EGO_STREAM in self.videos[cam]:
                return cam
        return None

    @property
    def exo_cams(self) -> list[str]:
        """Exo camera ids (cam01, cam02, ... or gp01 ...), sorted, with a stream "0"."""
        return sorted(
            cam
            for cam, streams in self.videos.items()
            if not cam.startswith("aria") and cam not in _NOT_EXO and EXO_STREAM in streams
        )


@dataclass(frozen=True)
class Description:
    """One timestamped atomic description that survived the keep rules."""

    take_uid: str
    text: str  # as annotated, still with "C" for the camera wearer
    timestamp: float
    subject: str | None
    ego_visible: bool
    best_exo: str | None


@dataclass
class DescriptionSet:
    """Kept descriptions of one split, grouped by take, plus why the others were dropped."""

    split: str
    path: Path
    by_take: dict[str, list[Description]] = field(default_factory=dict)
    annotations: int = 0
    annotations_rejected: int = 0
    dropped: Counter = field(default_factory=Counter)  # reason -> descriptions

    @property
    def kept(self) -> int:
        return sum(len(v) for v in self.by_take.values())

    @property
    def total(self) -> int:
        return self.kept + sum(self.dropped.values())


@dataclass(frozen=True)
class VideoInfo:
    """What one probe of an mp4 learned."""

    path: Path
    duration: float | None
    width: int
    height: int
    fps: float | None


# ----------------------------------------------------------------------------- JSON helpers


def load_json(path: Path) -> Any:
    """Parse a JSON file; a missing or malformed file is a one-line UserError naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise UserError(
            f"{path}: invalid JSON at line {e.lineno} column {e.colno} (char {e.pos}): {e.msg}"
        ) from None
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text at byte {e.start}") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None


def parse_flag(value: Any, default: bool = False) -> bool:
    """Read a flag stored as bool, 0/1, "0"/"1", "true"/"false" (any case); None -> default.

    Raises ValueError for anything else, so the caller can drop the record and count it
    rather than guess what e.g. "maybe" means.
    """
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        v = value.strip().lower()
        if v in ("1", "true", "yes", "t", "y"):
            return True
        if v in ("0", "false", "no", "f", "n", ""):
            return False
    raise ValueError(f"not a flag: {value!r}")


def _best_exo(value: Any) -> str | None:
    # Real files use {"cam_id": "cam02"}; be lenient about a bare string or null.
    if isinstance(value, dict):
        value = value.get("cam_id")
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _check_root(root: str | os.PathLike) -> Path:
    root = Path(root)
    if not root.exists():
        raise UserError(f"data root {root} does not exist")
    if not root.is_dir():
        raise UserError(f"data root {root} is not a folder")
    return root


# ----------------------------------------------------------------------------- takes


def read_takes(root: str | os.PathLike) -> dict[str, Take]:
    """Read ``ROOT/takes.json`` into ``{take_uid: Take}`` (file order kept).

    Takes without a take_uid or root_dir cannot be used and are skipped with a warning; a
    ``sim_text_side`` outside exo/ego/none/all is a user error (it means the file is broken).
    """
    root = _check_root(root)
    path = root / "takes.json"
    raw = load_json(path)
    if not isinstance(raw, list):
        raise UserError(f"{path}: expected a JSON list of takes, got {type(raw).__name__}")
    takes: dict[str, Take] = {}
    skipped = 0
    for i, t in enumerate(raw):
        if not isinstance(t, dict) or not t.get("take_uid") or not t.get("root_dir"):
            skipped += 1
            continue
        uid = str(t["take_uid"])
        side = t.get("sim_text_side", "all")  # real takes lack the key: all text is usable
        if side not in TEXT_SIDES:
            raise UserError(
                f"{path}: take {uid} has sim_text_side {side!r}, expected one of "
                + "/".join(TEXT_SIDES)
            )
        videos: dict[str, dict[str, str]] = {}
        for cam, streams in (t.get("frame_aligned_videos") or {}).items():
            if not isinstance(streams, dict):
                continue
            for stream_id, info in streams.items():
                rel = info.get("relative_path") if isinstance(info, dict) else None
                if isinstance(rel, str) and rel:
                    videos.setdefault(str(cam), {})[str(stream_id)] = rel
        duration = t.get("duration_sec")
        try:
            duration = float(duration) if duration is not None else None
        except (TypeError, ValueError):
            duration = None
        if duration is not None and not (math.isfinite(duration) and duration > 0):
            duration = None
        takes[uid] = Take(
            take_uid=uid,
            take_name=str(t.get("take_name") or uid),
            root_dir=str(t["root_dir"]),
            task_name=t.get("task_name"),
            duration_sec=duration,
            videos=videos,
            text_side=side,
            best_exo=_best_exo(t.get("best_exo")),
        )
    if skipped:
        log.warning("%s: skipped %d take(s) without take_uid or root_dir", path, skipped)
    return takes


# ----------------------------------------------------------------------------- descriptions


def split_path(root: str | os.PathLike, split: str) -> Path:
    return Path(root) / "annotations" / f"atomic_descriptions_{split}.json"


def available_splits(root: str | os.PathLike) -> list[str]:
    """Splits that have an atomic-descriptions file under ROOT/annotations, sorted."""
    prefix = "atomic_descriptions_"
    folder = Path(root) / "annotations"
    if not folder.is_dir():
        return []
    return sorted(p.stem[len(prefix) :] for p in folder.glob(f"{prefix}*.json"))


def read_descriptions(root: str | os.PathLike, split: str) -> DescriptionSet:
    """Read one split's atomic descriptions, keeping only usable ones.

    Dropped (counted in ``dropped`` by reason): every description of a rejected annotation
    ("rejected"), unsure descriptions ("unsure"), empty text ("empty_text"), a missing or
    non-numeric timestamp ("bad_timestamp"), a flag that is not a flag ("bad_flag").
    """
    root = _check_root(root)
    path = split_path(root, split)
    if not path.exists():
        have = available_splits(root)
        raise UserError(
            f"no atomic descriptions for split {split!r}: {path} not found"
            + (f" (available: {', '.join(have)})" if have else "")
        )
    raw = load_json(path)
    annotations = raw.get("annotations") if isinstance(raw, dict) else None
    if not isinstance(annotations, dict):
        raise UserError(f"{path}: expected an object with an \"annotations\" mapping")
    out = DescriptionSet(split=split, path=path)
    for uid, anns in annotations.items():
        if isinstance(anns, dict):  # tolerate a single annotation stored without the list
            anns = [anns]
        if not isinstance(anns, list):
            continue
        kept: list[Description] = []
        for ann in anns:
            if not isinstance(ann, dict):
                continue
            out.annotations += 1
            descs = [d for d in ann.get("descriptions") or [] if isinstance(d, dict)]
            try:
                rejected = parse_flag(ann.get("rejected"))
            except ValueError:
                out.dropped["bad_flag"] += len(descs)
                continue
            if rejected:
                out.annotations_rejected += 1
                out.dropped["rejected"] += len(descs)
                continue
            for d in descs:
                reason, desc = _description(str(uid), d)
                if desc is None:
                    out.dropped[reason] += 1
                else:
                    kept.append(desc)
        if kept:
            out.by_take[str(uid)] = kept
    return out


def _description(uid: str, d: dict[str, Any]) -> tuple[str, Description | None]:
    """(drop reason, None) or ("", Description) for one raw description."""
    try:
        unsure = parse_flag(d.get("unsure"))
        ego_visible = parse_flag(d.get("ego_visible"), default=True)
    except ValueError:
        return "bad_flag", None
    if unsure:
        return "unsure", None
    text = d.get("text")
    if not isinstance(text, str) or not text.strip():
        return "empty_text", None
    try:
        ts = float(d.get("timestamp"))
    except (TypeError, ValueError):
        return "bad_timestamp", None
    if not math.isfinite(ts):
        return "bad_timestamp", None
    subject = d.get("subject", d.get("narration_subject"))  # both spellings exist
    return "", Description(
        take_uid=uid,
        text=" ".join(text.split()),
        timestamp=ts,
        subject=str(subject) if subject is not None else None,
        ego_visible=ego_visible,
        best_exo=_best_exo(d.get("best_exo")),
    )


# ----------------------------------------------------------------------------- videos


def resolve_video(
    root: str | os.PathLike, take: Take, cam_id: str, stream_id: str | None = None
) -> Path | None:
    """Path of a take's video for ``cam_id`` (None if takes.json lists no such video).

    The 448-px copy under ``downscaled/448/`` is preferred when it exists: it is what most
    people download and it decodes much faster. Otherwise the full-resolution path is returned
    whether or not it exists; :func:`probe_video` reports a missing file.
    """
    streams = take.videos.get(cam_id)
    if not streams:
        return None
    if stream_id is None:
        stream_id = EGO_STREAM if cam_id.startswith("aria") else EXO_STREAM
    rel = streams.get(stream_id)
    if rel is None:
        return None
    full = Path(root) / take.root_dir / rel
    small = full.parent.joinpath(*DOWNSCALED_DIR, full.name)
    return small if small.is_file() else full


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Open an mp4 with PyAV, check it has a decodable video stream, read its duration.

    Raises :class:`VideoError` with a short problem ("missing", "no video stream", ...).
    """
    path = Path(path)
    if not path.is_file():
        raise VideoError("missing")
    if path.stat().st_size == 0:
        raise VideoError("empty file")
    try:
        import av
    except ImportError:  # pragma: no cover - av is a train dependency
        raise UserError("PyAV is not installed: pip install 'exo2ego-edge[train]'") from None
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError("no video stream")
            stream = container.streams.video[0]
            # Decoding one frame catches files whose header parses but whose data does not.
            try:
                next(container.decode(stream))
            except StopIteration:
                raise VideoError("no decodable frames") from None
            fps = float(stream.average_rate) if stream.average_rate else None
            duration: float | None = None
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / av.time_base
            elif stream.frames and fps:
                duration = stream.frames / fps
            return VideoInfo(path, duration, stream.width, stream.height, fps)
    except VideoError:
        raise
    except av.FFmpegError as e:
        raise VideoError(f"unreadable ({type(e).__name__}: {e.strerror or e})") from None
    except (OSError, ValueError, RuntimeError) as e:
        raise VideoError(f"unreadable ({type(e).__name__}: {e})") from None
