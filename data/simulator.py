"""The built-in simulator: a procedural tabletop world written in the real Ego-Exo4D layout.

A camera wearer "C" stands at a table with a handful of coloured objects (cups, bowls, boxes,
balls, blocks) and performs a short activity (tidy the table, stack the blocks, fill the bowl,
arrange the table) made of atomic actions (picks up, puts in/on, pushes, opens, closes, turns).
Each take is rendered, frame-synchronised, from a head-mounted **ego** camera (moves and shakes
with the head, looks at what the hands work on, hands at the bottom, objects large and often
cropped) and from two or more static **exo** cameras that frame the table's work area and C's
arms (the head and the table's far corners fall outside).
That is the paper's premise in miniature: the action is easy to read from exo, hard from ego.

Output (``synthesize_world``), written atomically::

    OUT/takes.json                                   list of take objects (Ego-Exo4D schema)
    OUT/annotations/atomic_descriptions_train.json   {"annotations": {take_uid: [annotation]},
    OUT/annotations/atomic_descriptions_val.json      "take_cam_id_map": {take_uid: {cam: cam}}}
    OUT/takes/<take_name>/frame_aligned_videos/aria01_214-1.mp4, cam01.mp4, cam02.mp4, ...
    OUT/simulator/take_records.jsonl                 one structured record per take (below)
    OUT/simulator/config.json                        the knobs the world was made with

Each take object carries the extra key ``sim_text_side`` ("exo" | "ego" | "none"; "all" for
val takes): which side of the take has usable text in the paper's data regime. Annotations are
written for every take regardless; the regime is applied downstream by the clip builder.

Take record schema (``simulator/take_records.jsonl``, one JSON object per line). Positions are
metres in table coordinates: x to C's right, y away from C, z up from the table top; a position
is an object's bottom centre. Times are seconds from the start of the take.

    take_uid, take_name, split ("train" | "val"), sim_text_side, fps, n_frames, duration_sec,
    activity      "tidy" | "stack" | "fill" | "arrange"
    task_name     e.g. "Tidy the table" (the same string as in takes.json)
    goal          e.g. "put the red ball and the blue block in the green box"
    cameras       {cam_id: {"view": "ego"} | {"view": "exo", "position", "look_at", "fov_deg"}}
    objects       [{id ("o0".."), name ("red cup"), colour, kind,
                    start: {pos, in (container id | null), on (support id | null)},
                    end:   {pos, in, on}}]
    actions       [{index, verb ("pick_up"|"put"|"push"|"open"|"close"|"turn"), text,
                    start, end, timestamp (middle), hand ("left"|"right"|null),
                    object (id | null), target (id | "table" | null), relation ("in"|"on"|null),
                    direction ("left"|"right"|null, turns only), from_pos, to_pos (object's,
                    null for turns), contents_before, contents_after ({container id: [ids]}
                    for every bowl and box), ego_visible, best_exo}]
    head_turns    [{action_index, direction, start, end, peak_yaw_deg}]

Determinism: a world is a function of its seed alone, whatever ``jobs`` is and whatever the CPU.
The JSON files are byte-identical everywhere, and so are the rendered frames before encoding
(plain float64 numpy; checked with numpy's dispatch cut to its baseline and under other OpenBLAS
kernels). The videos are byte-identical on every x86-64 CPU with AVX2: libx264 is pinned to its
AVX2 code, because its output depends on the instruction set it picks and its AVX-512 code is not
even repeatable within one process (the same frames encoded twice in a row came out different on
an AVX-512 CPU). Elsewhere (Arm, x86 without AVX2) libx264 uses other code: the videos are
repeatable there but differ from x86's by encoder rounding (a few grey levels).
"""

from __future__ import annotations

import bisect
import json
import logging
import multiprocessing
import os
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from exo2ego_edge.atomic import atomic_dir
from exo2ego_edge.data import sim_render as R
from exo2ego_edge.errors import UserError

log = logging.getLogger(__name__)

COLOURS: dict[str, R.Colour] = {
    "red": (0.85, 0.12, 0.10),
    "green": (0.12, 0.62, 0.20),
    "blue": (0.12, 0.28, 0.88),
    "yellow": (0.96, 0.86, 0.10),
    "purple": (0.56, 0.18, 0.72),
    "orange": (1.00, 0.50, 0.05),
}
KINDS = ("cup", "bowl", "box", "ball", "block")
CARRIABLE = ("cup", "ball", "block")
ACTIVITIES = {
    "tidy": "Tidy the table",
    "stack": "Stack the blocks",
    "fill": "Fill the bowl",
    "arrange": "Arrange the table",
}
EGO_CAM, EGO_STREAM, EGO_FILE = "aria01", "rgb", "aria01_214-1.mp4"

# The wearer and their reach (table coordinates, metres).
PERSON_XY = np.array([0.0, -0.6])
HEAD = np.array([0.0, -0.6, 0.63])
REST = np.array([[-0.17, -0.36, 0.08], [0.17, -0.36, 0.08]])  # left, right hand
HOLD = np.array([[-0.1, -0.24, 0.2], [0.1, -0.24, 0.2]])
HANDS = ("left", "right")
REACH_X, REACH_Y = (-0.42, 0.42), (-0.2, 0.24)
TURN_YAW = np.radians(55.0)
TURN_PROB, MAX_TURNS = 0.15, 2  # chance of a head turn after each action; cap per take
LEAD_IN, TAIL = 0.5, 0.5

# Cameras: a narrow-ish head camera close to the hands; exo cameras on an arc facing C, zoomed on
# the work area. A 48 degree exo view showing the whole person made objects 2-3 px wide at the
# tiny preset's 64 px, too small for the demonstrator to tell colours or kinds apart; at 34
# degrees, aimed at the reach area's centre, they are 5-8 px and the whole reach area stays in
# view (a test checks its corners on the table project inside the frame of every exo camera).
EGO_FOV, EXO_FOV = 50.0, 34.0
EXO_RADIUS, EXO_HEIGHT = 1.4, 0.95
EXO_LOOK_AT = np.array([0.0, -0.05, 0.12])


# --------------------------------------------------------------------------- world model


@dataclass
class SimObject:
    id: str
    kind: str
    colour: str
    base: np.ndarray  # bottom centre
    yaw: float = 0.0
    lid: float = 0.0  # boxes: 0 closed .. 1 open
    inside: str | None = None  # container id
    on: str | None = None  # support id

    @property
    def name(self) -> str:
        return f"{self.colour} {self.kind}"

    @property
    def height(self) -> float:
        return R.KIND_GEOMETRY[self.kind]["height"]

    @property
    def footprint(self) -> float:
        return R.KIND_GEOMETRY[self.kind]["footprint"]

    def grip_offset(self) -> np.ndarray:
        """Where a grasping hand sits relative to the base: on C's side of the object."""
        return np.array([0.0, -(self.footprint + 0.03), 0.55 * self.height])


@dataclass
class Track:
    """A value keyed by action phase in [0, 1], eased between keys."""

    keys: list[tuple[float, np.ndarray]]

    def at(self, phase: float) -> np.ndarray:
        phases = [p for p, _ in self.keys]
        i = bisect.bisect_right(phases, phase)
        if i == 0:
            return np.asarray(self.keys[0][1], dtype=float)
        if i == len(self.keys):
            return np.asarray(self.keys[-1][1], dtype=float)
        (p0, v0), (p1, v1) = self.keys[i - 1], self.keys[i]
        s = (phase - p0) / max(p1 - p0, 1e-9)
        s = s * s * (3 - 2 * s)  # smoothstep: limbs accelerate and decelerate
        return (1 - s) * np.asarray(v0, float) + s * np.asarray(v1, float)


@dataclass
class Action:
    verb: str
    text: str
    start: float
    end: float
    hand: int | None = None
    obj: str | None = None
    target: str | None = None
    relation: str | None = None
    direction: str | None = None
    focus: np.ndarray | None = None  # where C looks while doing it
    hand_track: Track | None = None
    obj_track: Track | None = None
    lid_track: Track | None = None
    yaw_track: Track | None = None
    from_pos: np.ndarray | None = None
    to_pos: np.ndarray | None = None
    contents_before: dict[str, list[str]] = field(default_factory=dict)
    contents_after: dict[str, list[str]] = field(default_factory=dict)

    @property
    def timestamp(self) -> float:
        return (self.start + self.end) / 2


@dataclass
class Snapshot:
    """Everything that moves, between actions."""

    bases: dict[str, np.ndarray]
    lids: dict[str, float]
    hands: np.ndarray


@dataclass
class TakePlan:
    activity: str
    goal: str
    objects: dict[str, SimObject]  # final state
    initial: dict[str, SimObject]
    actions: list[Action]
    snapshots: list[Snapshot]  # snapshots[k] = state before action k; [-1] after the last
    duration: float


@dataclass
class FrameState:
    bases: dict[str, np.ndarray]
    lids: dict[str, float]
    hands: np.ndarray
    yaw: float
    focus: np.ndarray
    busy: bool
    moving: str | None  # the object the running action moves or opens, if any


def _copy_objects(objects: dict[str, SimObject]) -> dict[str, SimObject]:
    return {k: SimObject(**{**vars(o), "base": o.base.copy()}) for k, o in objects.items()}


class TakeBuilder:
    """Runs an action script against the world state, recording timed, animated actions."""

    def __init__(self, rng: np.random.Generator, objects: dict[str, SimObject]):
        self.rng = rng
        self.objects = objects
        self.initial = _copy_objects(objects)
        self.hands = REST.copy()
        self.held: list[str | None] = [None, None]
        self.clock = LEAD_IN
        self.actions: list[Action] = []
        self.snapshots = [self._snapshot()]
        self._turns = 0

    # -- bookkeeping

    def _snapshot(self) -> Snapshot:
        return Snapshot(
            {k: o.base.copy() for k, o in self.objects.items()},
            {k: o.lid for k, o in self.objects.items()},
            self.hands.copy(),
        )

    def _contents(self) -> dict[str, list[str]]:
        containers = [o.id for o in self.objects.values() if o.kind in ("bowl", "box")]
        return {c: sorted(o.id for o in self.objects.values() if o.inside == c) for c in containers}

    def _record(self, action: Action, finish: Callable[[], None]) -> None:
        """Time ``action``, apply its end state via ``finish`` and keep before/after states."""
        action.start = self.clock + float(self.rng.uniform(0.05, 0.35))
        action.end = action.start + float(self.rng.uniform(1.0, 1.5))
        self.clock = action.end
        action.contents_before = self._contents()
        finish()
        action.contents_after = self._contents()
        self.actions.append(action)
        self.snapshots.append(self._snapshot())
        if action.verb != "turn" and self._turns < MAX_TURNS and self.rng.random() < TURN_PROB:
            self._turns += 1
            self.turn(str(self.rng.choice(["left", "right"])))

    def _free_hand(self, x: float) -> int:
        preferred = 1 if x > 0.04 else 0 if x < -0.04 else int(self.rng.integers(2))
        return preferred if self.held[preferred] is None else 1 - preferred

    # -- atomic actions

    def pick_up(self, oid: str) -> None:
        obj = self.objects[oid]
        hand = self._free_hand(obj.base[0])
        grasp = obj.base + obj.grip_offset()
        held_base = HOLD[hand] - obj.grip_offset()
        action = Action("pick_up", f"C picks up the {obj.name}.", 0, 0, hand=hand, obj=oid)
        action.focus = obj.base + [0, 0, obj.height / 2]
        action.hand_track = Track([(0, self.hands[hand]), (0.4, grasp + [0, 0, 0.08]),
                                   (0.6, grasp), (1.0, HOLD[hand])])  # fmt: skip
        action.obj_track = Track([(0, obj.base), (0.6, obj.base), (1.0, held_base)])
        action.from_pos, action.to_pos = obj.base.copy(), held_base

        def finish() -> None:
            self._lift_off(obj)
            obj.base = held_base.copy()
            self.hands[hand] = HOLD[hand]
            self.held[hand] = oid

        self._record(action, finish)

    def _lift_off(self, obj: SimObject) -> None:
        obj.inside = obj.on = None

    def put(self, oid: str, target: str, relation: str, dest: np.ndarray) -> None:
        """Put a held object ``relation`` ("in" / "on") ``target`` (an object id or "table")."""
        obj = self.objects[oid]
        hand = self.held.index(oid)
        where = "the table" if target == "table" else f"the {self.objects[target].name}"
        action = Action("put", f"C puts the {obj.name} {relation} {where}.", 0, 0, hand=hand,
                        obj=oid, target=target, relation=relation)  # fmt: skip
        grasp = dest + obj.grip_offset()
        action.focus = dest + [0, 0, 0.05]
        action.hand_track = Track([(0, self.hands[hand]), (0.55, grasp + [0, 0, 0.12]),
                                   (0.8, grasp), (1.0, REST[hand])])  # fmt: skip
        action.obj_track = Track([(0, obj.base), (0.55, dest + [0, 0, 0.12]), (0.8, dest),
                                  (1.0, dest)])  # fmt: skip
        action.from_pos, action.to_pos = obj.base.copy(), dest.copy()

        def finish() -> None:
            obj.base = dest.copy()
            obj.inside = target if relation == "in" else None
            obj.on = target if relation == "on" and target != "table" else None
            self.hands[hand] = REST[hand]
            self.held[hand] = None

        self._record(action, finish)

    def push(self, oid: str, displacement: np.ndarray) -> None:
        obj = self.objects[oid]
        hand = self._free_hand(obj.base[0])
        direction = displacement / np.linalg.norm(displacement)
        contact = obj.base + np.r_[-direction[:2] * (obj.footprint + 0.035), 0.5 * obj.height]
        dest = obj.base + displacement
        action = Action("push", f"C pushes the {obj.name}.", 0, 0, hand=hand, obj=oid)
        action.focus = obj.base + displacement / 2
        action.hand_track = Track([(0, self.hands[hand]), (0.35, contact),
                                   (0.8, contact + displacement), (1.0, REST[hand])])  # fmt: skip
        action.obj_track = Track([(0, obj.base), (0.35, obj.base), (0.8, dest), (1.0, dest)])
        action.from_pos, action.to_pos = obj.base.copy(), dest.copy()

        def finish() -> None:
            obj.base = dest.copy()
            self.hands[hand] = REST[hand]

        self._record(action, finish)

    def open_or_close(self, oid: str, open_it: bool) -> None:
        box = self.objects[oid]
        hand = self._free_hand(box.base[0])
        verb = "open" if open_it else "close"
        action = Action(verb, f"C {verb}s the {box.name}.", 0, 0, hand=hand, obj=oid)
        action.focus = box.base + [0, 0, box.height]
        a, b = (0.0, 1.0) if open_it else (1.0, 0.0)
        action.lid_track = Track([(0, a), (0.35, a), (0.75, b), (1.0, b)])
        edge = [lid_front_edge(box, a + (b - a) * s) for s in (0.0, 0.5, 1.0)]
        action.hand_track = Track([(0, self.hands[hand]), (0.35, edge[0]), (0.55, edge[1]),
                                   (0.75, edge[2]), (1.0, REST[hand])])  # fmt: skip
        action.from_pos = action.to_pos = box.base.copy()

        def finish() -> None:
            box.lid = b
            self.hands[hand] = REST[hand]

        self._record(action, finish)

    def turn(self, direction: str) -> None:
        sign = 1.0 if direction == "left" else -1.0  # + yaw = counter-clockwise = C's left
        action = Action("turn", f"C turns {direction}.", 0, 0, direction=direction)
        peak = sign * TURN_YAW * float(self.rng.uniform(0.85, 1.1))
        action.yaw_track = Track([(0, 0.0), (0.35, peak), (0.7, peak), (1.0, 0.0)])
        self._record(action, lambda: None)

    def plan(self, activity: str, goal: str) -> TakePlan:
        return TakePlan(activity, goal, self.objects, self.initial, self.actions,
                        self.snapshots, self.clock + TAIL)  # fmt: skip


def lid_front_edge(box: SimObject, lid: float) -> np.ndarray:
    """Where a hand holds the lid's front edge when the lid is ``lid`` open."""
    rot = R.yaw_rotation(box.yaw)
    hinge = box.base + rot @ [0.0, R.LID_HALF[1], 2 * R.BOX_HALF[2]]
    lid_rot = rot @ R.rotation_x(-1.9 * lid)
    return hinge + lid_rot @ [0.0, -2 * R.LID_HALF[1] - 0.03, R.LID_HALF[2] + 0.02]


# --------------------------------------------------------------------------- activity scripts


def _free_spot(rng, objects, footprint: float, ignore: str | None = None, tries: int = 200):
    """A table spot in C's reach clear of every other object (None if the table is full)."""
    for _ in range(tries):
        xy = np.array([rng.uniform(*REACH_X), rng.uniform(*REACH_Y)])
        if all(np.linalg.norm(xy - o.base[:2]) > footprint + o.footprint + 0.04
               for o in objects.values() if o.id != ignore and o.inside is None):  # fmt: skip
            return np.array([xy[0], xy[1], 0.0])
    return None


def _place_objects(rng, kinds: list[str]) -> dict[str, SimObject]:
    """Objects of the given kinds, each with its own colour-kind name, spread over the table."""
    objects: dict[str, SimObject] = {}
    used: set[tuple[str, str]] = set()
    for kind in kinds:
        kind = str(kind)
        colour = str(rng.choice([c for c in COLOURS if (c, kind) not in used]))
        used.add((colour, kind))
        oid = f"o{len(objects)}"
        obj = SimObject(oid, kind, colour, np.zeros(3), yaw=float(rng.uniform(-0.4, 0.4)))
        spot = _free_spot(rng, objects, obj.footprint)
        if spot is None:
            continue  # table full: drop this one
        obj.base = spot
        objects[oid] = obj
    return objects


def _distractors(rng, n: int) -> list[str]:
    return [str(k) for k in rng.choice(KINDS, size=n)]


def _maybe_push(b: TakeBuilder, oid: str, p: float = 0.35) -> None:
    """Sometimes nudge an object first: keeps 'push' in every activity's vocabulary."""
    if b.rng.random() < p:
        push_somewhere(b, oid)


def push_somewhere(b: TakeBuilder, oid: str) -> None:
    obj = b.objects[oid]
    for _ in range(20):
        angle = b.rng.uniform(0, 2 * np.pi)
        dist = b.rng.uniform(0.1, 0.18)
        disp = np.array([np.cos(angle) * dist, np.sin(angle) * dist, 0.0])
        dest = obj.base + disp
        clear = all(np.linalg.norm(dest[:2] - o.base[:2]) > obj.footprint + o.footprint + 0.03
                    for o in b.objects.values() if o.id != oid and o.inside is None)  # fmt: skip
        if REACH_X[0] <= dest[0] <= REACH_X[1] and REACH_Y[0] <= dest[1] <= REACH_Y[1] and clear:
            b.push(oid, disp)
            return


def _names(objects: list[SimObject]) -> str:
    names = [f"the {o.name}" for o in objects]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def script_tidy(rng) -> TakePlan:
    n_items = int(rng.integers(2, 4))
    kinds = ["box"] + list(rng.choice(CARRIABLE, n_items)) + _distractors(rng, 1)
    objs = _place_objects(rng, kinds)
    box = objs["o0"]
    items = [o for o in objs.values() if o.kind in CARRIABLE and o.id != "o0"][:n_items]
    b = TakeBuilder(rng, objs)
    _maybe_push(b, box.id)
    b.open_or_close(box.id, True)
    slots = [(-0.04, 0.025), (0.04, 0.025), (0.0, -0.03)]
    for item, (sx, sy) in zip(items, slots):
        b.pick_up(item.id)
        dest = b.objects[box.id].base + R.yaw_rotation(box.yaw) @ [sx, sy, R.WALL]
        b.put(item.id, box.id, "in", dest)
    b.open_or_close(box.id, False)
    return b.plan("tidy", f"put {_names(items)} in the {box.name}")


def script_stack(rng) -> TakePlan:
    n_blocks = int(rng.integers(3, 5))
    objs = _place_objects(rng, ["block"] * n_blocks + _distractors(rng, int(rng.integers(1, 3))))
    blocks = [o for o in objs.values() if o.kind == "block"][:n_blocks]
    b = TakeBuilder(rng, objs)
    _maybe_push(b, blocks[0].id)
    for lower, upper in zip(blocks, blocks[1:]):
        b.pick_up(upper.id)
        dest = b.objects[lower.id].base + [0, 0, lower.height]
        b.put(upper.id, lower.id, "on", dest)
    return b.plan("stack", f"stack {_names(blocks[1:])} on the {blocks[0].name}")


def script_fill(rng) -> TakePlan:
    n_items = int(rng.integers(2, 4))
    kinds = ["bowl"] + list(rng.choice(["ball", "block"], n_items)) + _distractors(rng, 1)
    objs = _place_objects(rng, kinds)
    bowl = objs["o0"]
    items = [o for o in objs.values() if o.kind in ("ball", "block") and o.id != "o0"][:n_items]
    b = TakeBuilder(rng, objs)
    _maybe_push(b, bowl.id)
    offsets = [(-0.025, 0.0), (0.025, 0.01), (0.0, -0.025)]
    for item, (ox, oy) in zip(items, offsets):
        b.pick_up(item.id)
        b.put(item.id, bowl.id, "in", b.objects[bowl.id].base + [ox, oy, 0.005])
    return b.plan("fill", f"put {_names(items)} in the {bowl.name}")


def script_arrange(rng) -> TakePlan:
    objs = _place_objects(rng, list(rng.choice(KINDS, int(rng.integers(4, 6)))))
    b = TakeBuilder(rng, objs)
    movable = [o for o in objs.values() if o.kind in CARRIABLE]
    for _ in range(int(rng.integers(2, 4))):
        obj = objs[str(rng.choice(list(objs)))]
        if obj.kind in CARRIABLE and obj.on is None and rng.random() < 0.65:
            _move_onto_something(b, obj)
        elif obj.on is None and not any(obj.id in (o.on, o.inside) for o in objs.values()):
            push_somewhere(b, obj.id)
    if not b.actions and movable:
        _move_onto_something(b, movable[0])
    elif not b.actions:
        push_somewhere(b, next(iter(objs)))
    return b.plan("arrange", "rearrange the objects on the table")


def _move_onto_something(b: TakeBuilder, obj: SimObject) -> None:
    """Pick ``obj`` up and put it in a bowl, on a closed box, or elsewhere on the table."""
    b.pick_up(obj.id)
    bowls = [o for o in b.objects.values() if o.kind == "bowl" and not b._contents()[o.id]]
    boxes = [o for o in b.objects.values() if o.kind == "box" and o.lid == 0
             and not any(x.on == o.id for x in b.objects.values())]  # fmt: skip
    roll = b.rng.random()
    if bowls and roll < 0.35:
        bowl = bowls[0]
        b.put(obj.id, bowl.id, "in", bowl.base + [0, 0, 0.005])
    elif boxes and roll < 0.6:
        box = boxes[0]
        b.put(obj.id, box.id, "on", box.base + [0, 0, box.height])
    else:
        spot = _free_spot(b.rng, b.objects, obj.footprint, ignore=obj.id)
        spot = spot if spot is not None else b.initial[obj.id].base.copy()
        b.put(obj.id, "table", "on", spot)


SCRIPTS: dict[str, Callable[[np.random.Generator], TakePlan]] = {
    "tidy": script_tidy,
    "stack": script_stack,
    "fill": script_fill,
    "arrange": script_arrange,
}


def plan_take(rng: np.random.Generator, activity: str) -> TakePlan:
    """The activity's action script (head turns are slipped in by :class:`TakeBuilder`)."""
    return SCRIPTS[activity](rng)


# --------------------------------------------------------------------------- frame states


def state_at(plan: TakePlan, t: float) -> FrameState:
    """Where everything is at time ``t``: the running action's tracks over its start snapshot."""
    starts = [a.start for a in plan.actions]
    k = bisect.bisect_right(starts, t) - 1
    if k < 0:
        snap, action, phase = plan.snapshots[0], None, 0.0
    elif t < plan.actions[k].end:
        action = plan.actions[k]
        snap, phase = plan.snapshots[k], (t - action.start) / (action.end - action.start)
    else:
        snap, action, phase = plan.snapshots[k + 1], None, 0.0
    bases = {oid: b.copy() for oid, b in snap.bases.items()}
    lids = dict(snap.lids)
    hands = snap.hands.copy()
    yaw = 0.0
    if action is not None:
        if action.hand_track is not None:
            hands[action.hand] = action.hand_track.at(phase)
        if action.obj_track is not None:
            bases[action.obj] = action.obj_track.at(phase)
        if action.lid_track is not None:
            lids[action.obj] = float(action.lid_track.at(phase))
        if action.yaw_track is not None:
            yaw = float(action.yaw_track.at(phase))
    moving = action.obj if action is not None else None
    return FrameState(bases, lids, hands, yaw, _attention(plan, k, action), action is not None,
                      moving)  # fmt: skip


def _attention(plan: TakePlan, k: int, action: Action | None) -> np.ndarray:
    """What C looks at: the running action's focus, else the next one's (people look ahead)."""
    if action is not None and action.focus is not None:
        return action.focus
    for a in plan.actions[max(k, 0):]:
        if a.focus is not None and a.verb != "turn":
            return a.focus
    return np.array([0.0, 0.0, 0.0])


# --------------------------------------------------------------------------- cameras


def exo_cameras(n: int, size: int) -> dict[str, R.Camera]:
    """``n`` static cameras on an arc on the far side of the table, all facing C."""
    spread = min(120.0 + 25.0 * (n - 2), 230.0)
    azimuths = np.radians(np.linspace(90 - spread / 2, 90 + spread / 2, n))
    cams = {}
    for i, az in enumerate(azimuths):
        pos = np.array([EXO_RADIUS * np.cos(az), EXO_RADIUS * np.sin(az), EXO_HEIGHT])
        cams[f"cam{i + 1:02d}"] = R.Camera.looking_at(pos, EXO_LOOK_AT, EXO_FOV, size)
    return cams


@dataclass
class HeadJitter:
    """Smooth head sway plus per-frame shake (radians), different for every take."""

    amp: np.ndarray  # (3 axes: yaw, pitch, roll, 2 frequencies)
    freq: np.ndarray
    phase: np.ndarray
    shake: float

    @classmethod
    def sample(cls, rng: np.random.Generator) -> HeadJitter:
        amp = np.radians([[2.5, 1.2], [2.0, 1.0], [1.8, 0.8]]) * rng.uniform(0.7, 1.3, (3, 2))
        freq = rng.uniform([0.4, 1.8], [0.9, 3.0], (3, 2))
        return cls(amp, freq, rng.uniform(0, 2 * np.pi, (3, 2)), float(np.radians(0.8)))

    def at(self, t: float, busy: bool, rng: np.random.Generator) -> np.ndarray:
        sway = (self.amp * np.sin(2 * np.pi * self.freq * t + self.phase)).sum(axis=1)
        gain = 1.6 if busy else 1.0  # working hands move the head too
        return gain * sway + rng.normal(0.0, self.shake * gain, 3)


class EgoRig:
    """The head camera: leans toward and looks at the focus (lagging), turns, and shakes."""

    def __init__(self, size: int, rng: np.random.Generator):
        self.size = size
        self.rng = rng
        self.jitter = HeadJitter.sample(rng)
        self.focus: np.ndarray | None = None

    def camera(self, state: FrameState, t: float, dt: float) -> R.Camera:
        follow = 1.0 - np.exp(-dt / 0.18)  # gaze lags the hands by ~0.2 s
        self.focus = state.focus.copy() if self.focus is None else (
            self.focus + follow * (state.focus - self.focus)
        )  # fmt: skip
        lean = np.r_[0.3 * (self.focus[:2] - PERSON_XY), -0.1]  # bend over the work
        eye = HEAD + lean + R.yaw_rotation(state.yaw) @ [0.0, 0.08, 0.02]
        to_focus = self.focus - eye
        azimuth = np.arctan2(to_focus[1], to_focus[0])
        elevation = np.arctan2(to_focus[2], np.linalg.norm(to_focus[:2]))
        turned = min(abs(state.yaw) / TURN_YAW, 1.0)
        jyaw, jpitch, jroll = self.jitter.at(t, state.busy, self.rng)
        azimuth += state.yaw + jyaw
        elevation = (1 - turned) * elevation + turned * np.radians(-15.0) + jpitch
        forward = np.array([np.cos(elevation) * np.cos(azimuth),
                            np.cos(elevation) * np.sin(azimuth), np.sin(elevation)])  # fmt: skip
        return R.Camera(eye, R.look_rotation(forward, jroll), EGO_FOV, self.size)


# --------------------------------------------------------------------------- rendering


def object_prims(plan: TakePlan, state: FrameState, ids) -> list[R.Primitive]:
    prims: list[R.Primitive] = []
    for oid in ids:
        obj = plan.initial[oid]
        colour = COLOURS[obj.colour]
        prims += R.object_primitives(obj.kind, colour, state.bases[oid], obj.yaw, state.lids[oid])
    return prims


def shadow_casters(plan: TakePlan, state: FrameState, ids) -> np.ndarray:
    rows = [(*state.bases[o][:2], 1.1 * plan.initial[o].footprint) for o in ids]
    return np.array(rows, dtype=float).reshape(-1, 3)


class ExoLayers:
    """Per exo camera, the room with everything that is not moving right now baked in.

    Between actions only the arms change, so an exo frame costs a handful of primitives; the
    layer is rebuilt when an action starts or ends (or every frame while the head turns).
    """

    def __init__(self, cameras: dict[str, R.Camera]):
        self.rooms = {cam_id: R.RoomView.of(cam) for cam_id, cam in cameras.items()}
        self.key: tuple | None = None
        self.layers: dict[str, R.RoomView] = {}
        self.frame_key: tuple | None = None
        self.last: dict[str, np.ndarray] = {}

    def frames(self, plan: TakePlan, state: FrameState) -> dict[str, np.ndarray]:
        moving = [state.moving] if state.moving else []
        still = [oid for oid in plan.initial if oid not in moving]
        key = (state.yaw, tuple((o, *state.bases[o].round(6), state.lids[o]) for o in still))
        if key != self.key:
            prims = object_prims(plan, state, still) + R.body_primitives(PERSON_XY, state.yaw)
            shadows = shadow_casters(plan, state, still)
            self.layers = {c: R.bake(room, prims, shadows) for c, room in self.rooms.items()}
            self.key = key
        moving_key = tuple((o, *state.bases[o].round(6), state.lids[o]) for o in moving)
        frame_key = (key, state.hands.round(6).tobytes(), moving_key)
        if frame_key == self.frame_key:  # nothing moved (C is between actions): same frames
            return self.last
        prims = object_prims(plan, state, moving)
        prims += R.arm_primitives(PERSON_XY, state.yaw, state.hands, upper_arms=True)
        shadows = shadow_casters(plan, state, moving)
        self.last = {c: R.render(layer, prims, shadows) for c, layer in self.layers.items()}
        self.frame_key = frame_key
        return self.last


def ego_frame(plan: TakePlan, state: FrameState, ego: R.Camera) -> np.ndarray:
    return labelled_frame(plan, state, ego, exo=False)[0]


def labelled_frame(plan: TakePlan, state: FrameState, camera: R.Camera, exo: bool):
    """A frame with every object and the wearer drawn, and which of them each pixel shows.

    Returns ``(rgb, owner, parts)``: ``owner`` holds an index into ``parts`` (-1: the room), and
    ``parts`` lists the take's objects followed by ``None`` for the wearer (arms; body in exo views).
    """
    ids = list(plan.initial)
    wearer = R.arm_primitives(PERSON_XY, state.yaw, state.hands, upper_arms=exo)
    if exo:
        wearer = R.body_primitives(PERSON_XY, state.yaw) + wearer
    parts = [object_prims(plan, state, [oid]) for oid in ids] + [wearer]
    rgb, owner = R.render_labelled(R.RoomView.of(camera), parts, shadow_casters(plan, state, ids))
    return rgb, owner, [plan.initial[oid] for oid in ids] + [None]


@dataclass
class TakeRender:
    """Per-action visibility facts measured while rendering (for annotations)."""

    ego_visible: dict[int, bool]
    n_frames: int


def x264_params() -> str:
    """libx264's settings that make the same frames give the same bytes (module docstring)."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:  # numpy < 2
        from numpy.core._multiarray_umath import __cpu_features__
    avx2 = all(__cpu_features__.get(f, False) for f in ("AVX2", "FMA3", "BMI2"))
    return "threads=1:asm=AVX2" if avx2 else "threads=1"


class VideoWriter:
    """One H.264 mp4 (libx264, yuv420p, one thread, instruction set pinned: see the module doc)."""

    def __init__(self, path: Path, size: int, fps: int):
        import av  # heavy; only needed while writing

        path.parent.mkdir(parents=True, exist_ok=True)
        self._av = av
        self.container = av.open(str(path), mode="w")
        self.stream = self.container.add_stream("libx264", rate=fps)
        self.stream.width = self.stream.height = size
        self.stream.pix_fmt = "yuv420p"
        self.stream.options = {"crf": "20", "preset": "veryfast", "threads": "1",
                               "x264-params": x264_params()}
        self.stream.codec_context.thread_count = 1

    def write(self, rgb: np.ndarray) -> None:
        frame = self._av.VideoFrame.from_ndarray(rgb, format="rgb24")
        self.container.mux(self.stream.encode(frame))

    def close(self) -> None:
        self.container.mux(self.stream.encode())
        self.container.close()


def render_take(
    plan: TakePlan, video_dir: Path, exo: dict[str, R.Camera], size: int, fps: int, rng
) -> TakeRender:
    """Render and encode every frame of every view; note which actions the ego camera saw."""
    n_frames = int(np.ceil(plan.duration * fps))
    writers = {EGO_CAM: VideoWriter(video_dir / EGO_FILE, size, fps)}
    writers.update({cam: VideoWriter(video_dir / f"{cam}.mp4", size, fps) for cam in exo})
    rig = EgoRig(size, rng)
    frame_of = {i: min(int(a.timestamp * fps), n_frames - 1) for i, a in enumerate(plan.actions)}
    ego_visible: dict[int, bool] = {}
    exo_layers = ExoLayers(exo)
    try:
        for f in range(n_frames):
            t = f / fps
            state = state_at(plan, t)
            ego = rig.camera(state, t, 1.0 / fps)
            writers[EGO_CAM].write(ego_frame(plan, state, ego))
            for cam_id, frame in exo_layers.frames(plan, state).items():
                writers[cam_id].write(frame)
            for i, fi in frame_of.items():
                if fi == f:
                    ego_visible[i] = _ego_sees(plan.actions[i], state, ego)
    finally:
        for w in writers.values():
            w.close()
    return TakeRender(ego_visible, n_frames)


def _ego_sees(action: Action, state: FrameState, ego: R.Camera) -> bool:
    if action.obj is None:
        return True  # a head turn is visible as the whole view sweeping
    return ego.sees(state.bases[action.obj] + [0, 0, 0.03], margin=1.0)


def best_exo(action: Action, plan: TakePlan, exo: dict[str, R.Camera]) -> str:
    """The exo camera that sees the action best: closest to the object, or the one C faces."""
    if action.obj is None:
        sign = 1.0 if action.direction == "left" else -1.0
        facing = R.yaw_rotation(sign * TURN_YAW)[:2, :2] @ [0.0, 1.0]
        score = {c: float(facing @ (cam.position[:2] - PERSON_XY)) / np.linalg.norm(
            cam.position[:2] - PERSON_XY) for c, cam in exo.items()}  # fmt: skip
    else:
        point = (action.from_pos + action.to_pos) / 2
        score = {c: -float(np.linalg.norm(cam.position - point)) for c, cam in exo.items()}
    return max(score, key=lambda c: (score[c], -int(c[3:])))


# --------------------------------------------------------------------------- layout


@dataclass
class SynthConfig:
    takes: int = 100
    seed: int = 0
    size: int = 128
    fps: int = 8
    exo_cams: int = 2
    val_frac: float = 0.2
    exo_text_frac: float = 0.6
    ego_text_frac: float = 0.15

    def validate(self) -> None:
        checks = [
            (self.takes >= 1, f"--takes must be >= 1 (got {self.takes})"),
            (32 <= self.size <= 1024 and self.size % 2 == 0,
             f"--size must be an even number of pixels in 32..1024 (got {self.size})"),
            (1 <= self.fps <= 60, f"--fps must be in 1..60 (got {self.fps})"),
            (2 <= self.exo_cams <= 8, f"--exo-cams must be in 2..8 (got {self.exo_cams})"),
            (0.0 <= self.val_frac < 1.0, f"--val-frac must be in [0, 1) (got {self.val_frac})"),
            (round(self.val_frac * self.takes) < self.takes,
             f"--val-frac {self.val_frac} of {self.takes} takes leaves no training take: lower it or add takes"),
            (0.0 <= self.exo_text_frac <= 1.0 and 0.0 <= self.ego_text_frac <= 1.0
             and self.exo_text_frac + self.ego_text_frac <= 1.0 + 1e-9,
             "--exo-text-frac and --ego-text-frac must each be in [0, 1] and sum to at most 1 "
             f"(got {self.exo_text_frac} + {self.ego_text_frac})"),
        ]  # fmt: skip
        for ok, message in checks:
            if not ok:
                raise UserError(message)


@dataclass
class SynthReport:
    out: Path
    takes: int
    train_takes: int
    val_takes: int
    text_sides: dict[str, int]
    frames_per_view: int
    videos: int
    annotations: int
    video_seconds: float
    seconds: float

    def summary(self) -> str:
        sides = ", ".join(f"{n} {s}" for s, n in self.text_sides.items())
        return (
            f"Synthesized {self.takes} takes ({self.train_takes} train, {self.val_takes} val; "
            f"train text side: {sides}) in {self.seconds:.1f} s: {self.videos} mp4 videos, "
            f"{self.frames_per_view} frames per view ({self.video_seconds:.0f} s of video per "
            f"view), {self.annotations} atomic descriptions -> {self.out}"
        )


@dataclass
class TakeAssignment:
    index: int
    split: str
    text_side: str
    activity: str


def assign_takes(cfg: SynthConfig) -> list[TakeAssignment]:
    """Split, text regime and activity of every take: exact fractions, shuffled by seed."""
    rng = np.random.default_rng([cfg.seed, 0xA55])
    order = rng.permutation(cfg.takes)
    n_val = int(round(cfg.val_frac * cfg.takes))
    val = set(order[:n_val].tolist())
    train = [int(i) for i in order[n_val:]]
    n_exo = int(round(cfg.exo_text_frac * len(train)))
    n_ego = min(int(round(cfg.ego_text_frac * len(train))), len(train) - n_exo)
    side = {i: "exo" for i in train[:n_exo]}
    side.update({i: "ego" for i in train[n_exo : n_exo + n_ego]})
    activities = list(ACTIVITIES)
    return [
        TakeAssignment(
            i,
            "val" if i in val else "train",
            "all" if i in val else side.get(i, "none"),
            activities[int(rng.integers(len(activities)))],
        )
        for i in range(cfg.takes)
    ]


def _r(x) -> list[float] | float | None:
    """Round for JSON so that files are stable and short."""
    if x is None:
        return None
    if np.ndim(x) == 0:
        return round(float(x), 3)
    return [round(float(v), 3) for v in x]


def take_entry(uid: str, name: str, plan: TakePlan, exo: dict[str, R.Camera], side: str) -> dict:
    """One take object of takes.json, shaped like Ego-Exo4D's (plus ``sim_text_side``)."""
    videos = {EGO_CAM: {EGO_STREAM: _stream(EGO_CAM, "214-1", EGO_STREAM, EGO_FILE)}}
    for cam in exo:
        videos[cam] = {"0": _stream(cam, "0", "0", f"{cam}.mp4")}
    return {
        "take_uid": uid,
        "take_name": name,
        "root_dir": f"takes/{name}",
        "task_name": ACTIVITIES[plan.activity],
        "parent_task_name": "Simulated tabletop",
        "duration_sec": None,  # filled in once the frame count is known
        "frame_aligned_videos": videos,
        "sim_text_side": side,
    }


def _stream(cam: str, stream_id: str, readable: str, filename: str) -> dict:
    return {
        "cam_id": cam,
        "stream_id": stream_id,
        "readable_stream_id": readable,
        "relative_path": f"frame_aligned_videos/{filename}",
        "is_collage": False,
    }


def annotation_entry(uid: str, plan: TakePlan, seen: TakeRender, exo, rng) -> dict:
    descriptions = [
        {
            "text": a.text,
            "timestamp": _r(a.timestamp),
            "subject": "C",
            "ego_visible": bool(seen.ego_visible.get(i, False)),
            "unsure": False,
            "best_exo": {"cam_id": best_exo(a, plan, exo)},
        }
        for i, a in enumerate(plan.actions)
    ]
    return {"annotation_uid": _uid(rng), "rejected": False, "reject_reason": None,
            "descriptions": descriptions}  # fmt: skip


def take_record(uid, name, assignment, plan, seen, exo, fps, descriptions) -> dict:
    """The structured ground truth of one take (schema in the module docstring)."""

    def where(o: SimObject, base: np.ndarray) -> dict:
        return {"pos": _r(base), "in": o.inside, "on": o.on}

    cameras: dict[str, dict] = {EGO_CAM: {"view": "ego"}}
    for cam_id, cam in exo.items():
        cameras[cam_id] = {"view": "exo", "position": _r(cam.position),
                           "look_at": _r(EXO_LOOK_AT), "fov_deg": EXO_FOV}  # fmt: skip
    actions = []
    for i, (a, d) in enumerate(zip(plan.actions, descriptions)):
        actions.append({
            "index": i, "verb": a.verb, "text": a.text, "start": _r(a.start), "end": _r(a.end),
            "timestamp": _r(a.timestamp), "hand": HANDS[a.hand] if a.hand is not None else None,
            "object": a.obj, "target": a.target, "relation": a.relation, "direction": a.direction,
            "from_pos": _r(a.from_pos), "to_pos": _r(a.to_pos),
            "contents_before": a.contents_before, "contents_after": a.contents_after,
            "ego_visible": d["ego_visible"], "best_exo": d["best_exo"]["cam_id"],
        })  # fmt: skip
    turns = [
        {"action_index": i, "direction": a.direction, "start": _r(a.start), "end": _r(a.end),
         "peak_yaw_deg": _r(np.degrees(a.yaw_track.keys[1][1]))}
        for i, a in enumerate(plan.actions) if a.verb == "turn"
    ]  # fmt: skip
    return {
        "take_uid": uid, "take_name": name, "split": assignment.split,
        "sim_text_side": assignment.text_side, "fps": fps, "n_frames": seen.n_frames,
        "duration_sec": _r(seen.n_frames / fps), "activity": plan.activity,
        "task_name": ACTIVITIES[plan.activity], "goal": plan.goal, "cameras": cameras,
        "objects": [
            {"id": o.id, "name": o.name, "colour": o.colour, "kind": o.kind,
             "start": where(plan.initial[o.id], plan.initial[o.id].base),
             "end": where(o, o.base)}
            for o in plan.objects.values()
        ],
        "actions": actions, "head_turns": turns,
    }  # fmt: skip


def _uid(rng: np.random.Generator) -> str:
    return str(uuid.UUID(bytes=rng.bytes(16), version=4))


@dataclass
class TakeOutput:
    entry: dict
    annotation: dict
    record: dict
    split: str
    n_frames: int


def synthesize_take(cfg: SynthConfig, a: TakeAssignment, root: Path) -> TakeOutput:
    """Plan, render and describe one take; deterministic in (seed, take index) alone."""
    rng = np.random.default_rng([cfg.seed, a.index])
    uid = _uid(rng)
    name = f"sim_{a.activity}_{a.index:05d}"
    plan = plan_take(rng, a.activity)
    exo = exo_cameras(cfg.exo_cams, cfg.size)
    entry = take_entry(uid, name, plan, exo, a.text_side)
    seen = render_take(plan, root / entry["root_dir"] / "frame_aligned_videos", exo, cfg.size,
                       cfg.fps, rng)  # fmt: skip
    entry["duration_sec"] = _r(seen.n_frames / cfg.fps)
    annotation = annotation_entry(uid, plan, seen, exo, rng)
    record = take_record(uid, name, a, plan, seen, exo, cfg.fps, annotation["descriptions"])
    return TakeOutput(entry, annotation, record, a.split, seen.n_frames)


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1) + "\n")


def synthesize_world(
    out: str | Path,
    takes: int = 100,
    seed: int = 0,
    size: int = 128,
    fps: int = 8,
    exo_cams: int = 2,
    val_frac: float = 0.2,
    exo_text_frac: float = 0.6,
    ego_text_frac: float = 0.15,
    overwrite: bool = False,
    jobs: int | None = None,
    progress: bool | None = None,
) -> SynthReport:
    """Make a simulated Ego-Exo4D world at ``out`` (see the module docstring for the layout).

    ``jobs``: worker processes (None = one per CPU, at most 8); the output does not depend on
    it, because every take is seeded by (seed, take index) alone. ``progress``: show a tqdm bar
    (None = only on a terminal).
    """
    cfg = SynthConfig(takes, seed, size, fps, exo_cams, val_frac, exo_text_frac, ego_text_frac)
    cfg.validate()
    out = Path(out)
    if out.exists() and not overwrite:
        raise UserError(f"output folder {out} already exists; pass --overwrite to replace it")
    began = time.perf_counter()
    assignments = assign_takes(cfg)
    with atomic_dir(out, overwrite=overwrite) as root:
        results = _run_all(cfg, assignments, root, jobs, progress)
        _write_layout(root, cfg, results)
    seconds = time.perf_counter() - began
    frames = sum(r.n_frames for r in results)
    sides = {s: sum(r.entry["sim_text_side"] == s for r in results if r.split == "train")
             for s in ("exo", "ego", "none")}  # fmt: skip
    report = SynthReport(
        out=out, takes=len(results), train_takes=sum(r.split == "train" for r in results),
        val_takes=sum(r.split == "val" for r in results), text_sides=sides,
        frames_per_view=frames, videos=len(results) * (1 + exo_cams),
        annotations=sum(len(r.annotation["descriptions"]) for r in results),
        video_seconds=frames / fps, seconds=seconds,
    )  # fmt: skip
    log.info(report.summary())
    return report


def _run_all(cfg, assignments, root: Path, jobs: int | None, progress) -> list[TakeOutput]:
    """Synthesize every take, in worker processes when that helps; results in take order."""
    from tqdm import tqdm

    jobs = min(os.cpu_count() or 1, 8) if jobs is None else jobs
    if jobs < 1:
        raise UserError(f"--jobs must be >= 1 (got {jobs})")
    jobs = min(jobs, len(assignments))
    bar = tqdm(total=len(assignments), desc="synth", unit="take",
               disable=None if progress is None else not progress)  # fmt: skip
    results = []
    with bar:
        if jobs == 1:
            for a in assignments:
                results.append(synthesize_take(cfg, a, root))
                bar.update()
            return results
        # spawn, not fork: the parent may hold threads (tqdm's monitor, torch) that fork breaks.
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(jobs, mp_context=ctx) as pool:
            for result in pool.map(synthesize_take, [cfg] * len(assignments), assignments,
                                   [root] * len(assignments)):  # fmt: skip
                results.append(result)
                bar.update()
    return results


def _write_layout(root: Path, cfg: SynthConfig, results: list[TakeOutput]) -> None:
    _write_json(root / "takes.json", [r.entry for r in results])
    for split in ("train", "val"):
        mine = [r for r in results if r.split == split]
        _write_json(root / "annotations" / f"atomic_descriptions_{split}.json", {
            "annotations": {r.entry["take_uid"]: [r.annotation] for r in mine},
            "take_cam_id_map": {
                r.entry["take_uid"]: {cam: cam for cam in r.entry["frame_aligned_videos"]}
                for r in mine
            },
        })  # fmt: skip
    records = "".join(json.dumps(r.record, sort_keys=False) + "\n" for r in results)
    (root / "simulator").mkdir(parents=True, exist_ok=True)
    (root / "simulator" / "take_records.jsonl").write_text(records)
    _write_json(root / "simulator" / "config.json", vars(cfg))
