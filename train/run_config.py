"""The training run's config: the schema (one dataclass per section), YAML files and overrides.

A config file is YAML with the sections ``run``, ``data``, ``weights``, ``model`` and one per
stage (``init``, ``stage1``, ``stage2``, ``stage3``); ``base: NAME`` starts from another config
(a bundled name or a path beside this file) and gives only what differs. ``key.sub=value``
overrides on the command line apply last. Unknown keys and wrong types are refused in one line
that names the key. What each stage *does* with its section is in :mod:`.stages`.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exo2ego_edge.data.egoexo4d import TEXT_SIDES
from exo2ego_edge.errors import UserError

STAGE_ORDER = ("init", "stage1", "stage2", "stage3")
PRECISIONS = ("fp32", "bf16", "fp16")


# --- per-stage configs ------------------------------------------------------------------------
@dataclass
class StageConfig:
    """Optimisation knobs shared by every stage."""

    steps: int = 100  # optimizer steps (data cycles in epochs as needed)
    batch_size: int = 16  # per process, per micro-batch
    grad_accum: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 10
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    max_grad_norm: float = 1.0
    # lr multiplier for everything but the LLM (vision towers, F, G, projector): a from-scratch
    # vision tower needs a faster start than the LLM, which would otherwise learn the text prior
    # and ignore the frames.
    vision_lr_mult: float = 1.0
    # lr multiplier for the vision towers alone, on top of vision_lr_mult: a pretrained tower
    # (--vision-tower) keeps what it knows at a low rate; 0 freezes the towers for the stage.
    encoder_lr_mult: float = 1.0
    # Start from this checkpoint folder instead of the previous stage's final one.
    init_from: str | None = None

    def validate(self, name: str) -> None:
        for key in ("steps", "batch_size", "grad_accum"):
            if getattr(self, key) < (0 if key == "steps" else 1):
                raise UserError(f"{name}.{key} must be >= {0 if key == 'steps' else 1}")
        if self.lr <= 0 or self.vision_lr_mult <= 0:
            raise UserError(f"{name}.lr and {name}.vision_lr_mult must be > 0")
        if self.encoder_lr_mult < 0:
            raise UserError(f"{name}.encoder_lr_mult must be >= 0 (0 freezes the vision towers)")
        if not 0 <= self.min_lr_ratio <= 1:
            raise UserError(f"{name}.min_lr_ratio must be in [0, 1]")
        for f in dataclasses.fields(self):
            if f.name.endswith("text_sides"):
                bad = set(getattr(self, f.name)) - set(TEXT_SIDES)
                if bad:
                    raise UserError(f"{name}.{f.name}: {sorted(bad)} not in {', '.join(TEXT_SIDES)}")


@dataclass
class InitConfig(StageConfig):
    """From-scratch alignment (only without a pretrained MLLM): everything trains."""

    exo_text_sides: list[str] = field(default_factory=lambda: ["exo", "all"])
    ego_text_sides: list[str] = field(default_factory=lambda: ["ego", "all"])
    ego_instructions: bool = True  # also learn the instruction format on ego/all instructions
    # Show the one shared tower both views equally often by repeating the scarcer view's rows
    # (ego text is scarce by design): trained on 4x more exo rows, the tower gave ego frames
    # features the LLM ignored (measured: one constant answer for every held-out ego clip).
    balance_views: bool = True
    # Weight of the caption-token classification loss on the tower (train/caption_tags.py), the
    # stand-in for a pretrained encoder's object knowledge; 0 turns it off.
    tag_weight: float = 0.0


@dataclass
class Stage1Config(StageConfig):
    """Demonstrator self-preparation: exo clip text, exo encoder + projector train."""

    exo_text_sides: list[str] = field(default_factory=lambda: ["exo", "all"])


@dataclass
class Stage2Config(StageConfig):
    """Demonstrator-learner guidance: all synchronized pairs for KL / cycle, VTG on some."""

    # The pair's text is used for VTG (ego features -> text) only on these rows: the paper's
    # Ego-ExoClip pairs carry exo-side text.
    vtg_text_sides: list[str] = field(default_factory=lambda: ["exo", "all"])
    vtg_weight: float = 1.0
    kl_weight: float = 1.0
    cycle_weight: float = 1.0
    kl_tau: float = 1.0
    # "frame": KL between each frame's mean ego / exo features (the views agree in time, not in
    # space); "token": between tokens at the same grid position. See train/losses.py.
    kl_pool: str = "frame"

    def validate(self, name: str) -> None:
        super().validate(name)
        if self.kl_tau <= 0:
            raise UserError(f"{name}.kl_tau must be > 0")
        if self.kl_pool not in ("frame", "token"):
            raise UserError(f"{name}.kl_pool must be 'frame' or 'token', got '{self.kl_pool}'")


@dataclass
class Stage3Config(StageConfig):
    """Learner self-practice: ego instructions, ego encoder + F + LoRA train."""

    text_sides: list[str] = field(default_factory=lambda: ["ego", "all"])


# --- run-wide configs -------------------------------------------------------------------------
@dataclass
class DataConfig:
    # Ego-ExoClip JSONL files from `data build-clips` (one per split is typical; rows are
    # filtered by their "split"). Relative paths are relative to the working directory.
    clips: list[str] = field(default_factory=list)
    # Instruction JSONL files; default: each clips file's <stem>.instructions.jsonl if present.
    instructions: list[str] | None = None
    train_split: str = "train"
    eval_split: str = "val"
    # Where decoded frames are cached (memory-mapped .npy); default: beside each data file.
    cache_dir: str | None = None
    # Training-only augmentation (evaluation and serving see the centred, unshifted frames).
    # frame_pool: candidate frames cached per model frame (odd); training draws one per group,
    # a temporal jitter of up to +-(pool // 2) / pool of a sampling interval. 1: off.
    frame_pool: int = 1
    # shift_pixels: random translation of each training clip by up to this many pixels
    # (edge-padded crop). No flips: left / right carry meaning.
    shift_pixels: int = 0
    # A stage with fewer examples than one batch per process is refused, unless this is on: then
    # its batches repeat examples and keep their size (the ego-text sweep's 2% budget needs it).
    repeat_small_stages: bool = False


@dataclass
class WeightsConfig:
    """Local Hugging Face folders to start from (``--vision-tower`` / ``--llm`` override them).

    A value that is not a folder names one shipped in ``exo2ego_edge/assets`` (``egosim-tiny-tower``).
    """

    vision_tower: str | None = None
    llm: str | None = None

    def folder(self, key: str) -> Path | None:
        value = getattr(self, key)
        if value is None:
            return None
        from exo2ego_edge.assets import ASSETS

        for candidate in (Path(value), ASSETS / value):
            if candidate.is_dir():
                return candidate
        raise UserError(f"weights.{key}: {value} is neither a folder nor one shipped with exo2ego-edge")


@dataclass
class RunSettings:
    output_dir: str = "runs/egosim-tiny"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "fp32"  # autocast dtype on CUDA: fp32 | bf16 | fp16
    threads: int | None = None  # torch CPU threads per process (default: cores / processes)
    log_every: int = 10
    checkpoint_every: int = 50
    keep_checkpoints: int = 2
    gradient_checkpointing: bool = False
    fsdp: bool = False  # shard with FSDP2, torch.distributed.fsdp.fully_shard (models that do not fit one GPU)
    tokenizer_vocab_size: int = 512  # the byte-level BPE trained when no --llm is given
    eval_samples: int = 64  # held-out ego clips scored after each stage (0: no evaluation)
    progress_bar: bool = True

    def validate(self) -> None:
        if self.device not in ("auto", "cpu", "cuda"):
            raise UserError(f"run.device '{self.device}' is not one of: auto, cpu, cuda")
        if self.precision not in PRECISIONS:
            raise UserError(f"run.precision '{self.precision}' is not one of: {', '.join(PRECISIONS)}")
        if self.checkpoint_every < 1 or self.keep_checkpoints < 1 or self.log_every < 1:
            raise UserError("run.checkpoint_every, run.keep_checkpoints and run.log_every must be >= 1")


@dataclass
class TrainConfig:
    """The whole YAML file. ``model`` is a preset name plus overrides of its fields."""

    run: RunSettings = field(default_factory=RunSettings)
    data: DataConfig = field(default_factory=DataConfig)
    model: dict[str, Any] = field(default_factory=lambda: {"preset": "egosim-tiny"})
    weights: WeightsConfig = field(default_factory=WeightsConfig)
    init: InitConfig = field(default_factory=InitConfig)
    stage1: Stage1Config = field(default_factory=Stage1Config)
    stage2: Stage2Config = field(default_factory=Stage2Config)
    stage3: Stage3Config = field(default_factory=Stage3Config)

    def stage(self, name: str) -> StageConfig:
        return getattr(self, name)

    def validate(self) -> None:
        self.run.validate()
        if self.data.frame_pool < 1 or self.data.frame_pool % 2 == 0:
            raise UserError(f"data.frame_pool must be odd and >= 1, got {self.data.frame_pool}")
        if self.data.shift_pixels < 0:
            raise UserError("data.shift_pixels must be >= 0")
        for name in STAGE_ORDER:
            self.stage(name).validate(name)
        if "preset" not in self.model:
            raise UserError("model.preset is required (egosim-tiny, edge-0.5b or exo2ego-7b)")

    def model_config(self):
        return model_config_from(self.model)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def model_config_from(section: dict[str, Any]):
    """A config's ``model`` section -> ModelConfig: the preset named by ``preset`` with the other
    keys merged into its fields."""
    from exo2ego_edge.config import PRESETS, ModelConfig

    base = dict(section)
    preset = base.pop("preset", None)
    if preset not in PRESETS:
        raise UserError(f"model.preset '{preset}' is not one of: {', '.join(PRESETS)}")
    return ModelConfig.from_dict(_deep_merge(PRESETS[preset]().to_dict(), base, "model"))


# --- loading: YAML file + overrides -> validated TrainConfig -----------------------------------
CONFIG_DIR = Path(__file__).parent / "configs"


def resolve_config_path(config: str | Path) -> Path:
    """A YAML path, or the name of a bundled config (``egosim-tiny``, ``egosim-tiny-quick``...)."""
    path = Path(config)
    if path.is_file():
        return path
    bundled = CONFIG_DIR / f"{config}.yaml"
    if bundled.is_file():
        return bundled
    names = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
    raise UserError(f"{config}: no such config file (bundled configs: {names})")


def load_config(config: str | Path | dict, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read a YAML config (or a dict), resolve its ``base``, apply ``a.b=value`` overrides, validate."""
    raw = config if isinstance(config, dict) else _read_yaml(resolve_config_path(config), ())
    raw = apply_overrides(dict(raw), overrides)
    cfg = _build(TrainConfig, raw, "")
    cfg.validate()
    return cfg


def _read_yaml(path: Path, chain: tuple[Path, ...]) -> dict:
    """A config file as a dict, with the config named by its ``base`` key merged underneath."""
    import yaml

    if path.resolve() in chain:
        raise UserError(f"{path}: 'base' comes back to itself ({' -> '.join(p.name for p in chain)})")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: the top level must be a mapping")
    base = raw.pop("base", None)
    if base is None:
        return raw
    beside = path.parent / f"{base}.yaml"
    return _merge_yaml(_read_yaml(beside if beside.is_file() else resolve_config_path(base), (*chain, path.resolve())), raw)


def _merge_yaml(base: dict, over: dict) -> dict:
    """``over`` on top of ``base``, section by section (the schema checks the keys later)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge_yaml(base[k], v) if isinstance(base.get(k), dict) and isinstance(v, dict) else v
    return out


def apply_overrides(raw: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """Set each ``a.b=value`` (value read as YAML) in the nested dict ``raw``."""
    import yaml

    for item in overrides:
        if "=" not in item:
            raise UserError(f"override '{item}' is not key=value (e.g. stage2.kl_weight=0.5)")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        node = raw
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise UserError(f"override '{key}': '{p}' is not a section")
        try:
            node[parts[-1]] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            if value.lstrip()[:1] in ("[", "{"):  # meant as a list / mapping: say why it is not one
                raise UserError(f"override '{item}': not a valid YAML list or mapping "
                                f"({' '.join(str(e).split())[:120]})") from None
            node[parts[-1]] = value
    return raw


def _build(cls, raw: Any, prefix: str):
    """Instantiate dataclass ``cls`` from a dict, checking keys and simple types by name."""
    if not isinstance(raw, dict):
        raise UserError(f"config key '{prefix.rstrip('.')}' must be a mapping")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise UserError(
            f"unknown config key '{prefix}{unknown[0]}' (known: {', '.join(sorted(fields))})"
        )
    kwargs = {}
    for name, value in raw.items():
        hint = hints[name]
        key = f"{prefix}{name}"
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value or {}, f"{key}.")
        else:
            kwargs[name] = _check_type(key, value, hint)
    return cls(**kwargs)


def _check_type(key: str, value: Any, hint: Any) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML 1.1 reads "5e-4" (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise UserError(f"config key '{key}' must be a list")
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"config key '{key}' must be a mapping")
        return value
    if hint in (int, float, str, bool):
        if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
            raise UserError(f"config key '{key}' must be {hint.__name__}, got {value!r}")
    return value


def _deep_merge(base: dict, over: dict, prefix: str) -> dict:
    out = dict(base)
    for k, v in over.items():
        if k not in base:
            raise UserError(f"unknown config key '{prefix}.{k}' (known: {', '.join(sorted(base))})")
        out[k] = _deep_merge(base[k], v, f"{prefix}.{k}") if isinstance(base[k], dict) and isinstance(v, dict) and k != "extra" else v
    return out
