"""Numpy ray caster for the simulated tabletop world (used by :mod:`.simulator`).

Why ray casting rather than 2D sprites: the ego camera sits a few decimetres above the hands,
so perspective, cropping and occlusion (hands in front of objects, objects in bowls) must come
out right for free; the exo cameras are far away and see small but correct shapes. Every
primitive is intersected analytically with all the pixel rays of its screen bounding box at once
(vectorised, no per-pixel Python), and a depth buffer composites them over the room background.

World frame (metres): the table top is the plane z = 0 centred on the origin; x points to the
wearer's right, y away from the wearer, z up. The floor is at z = -TABLE_HEIGHT.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

TABLE_HALF = (0.55, 0.35)  # half width (x) and half depth (y) of the table top
TABLE_HEIGHT = 0.75
ROOM_RADIUS = 2.6  # the walls are a cylinder around the table
WINDOW_XY = (ROOM_RADIUS * float(np.cos(2.2)), ROOM_RADIUS * float(np.sin(2.2)))
DOOR_XY = (ROOM_RADIUS * float(np.cos(0.3)), ROOM_RADIUS * float(np.sin(0.3)))
LIGHT = np.array([0.35, -0.45, 1.0]) / np.linalg.norm([0.35, -0.45, 1.0])
AMBIENT, DIFFUSE = 0.42, 0.58

SKIN = (0.91, 0.72, 0.60)
SHIRT = (0.30, 0.31, 0.36)
TROUSERS = (0.20, 0.22, 0.30)
HAIR = (0.22, 0.14, 0.09)

Colour = tuple[float, float, float]


# --------------------------------------------------------------------------- cameras


def _cross(a, b) -> np.ndarray:
    """3-vector cross product (np.cross is ~50x slower on single vectors)."""
    ax, ay, az = a
    bx, by, bz = b
    return np.array([ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx])


def look_rotation(forward: np.ndarray, roll: float = 0.0) -> np.ndarray:
    """World->camera rotation whose rows are (right, down, forward); ``roll`` in radians."""
    f = forward / np.linalg.norm(forward)
    right = _cross(f, (0.0, 0.0, 1.0))
    if np.linalg.norm(right) < 1e-6:  # looking straight down: any right vector will do
        right = np.array([1.0, 0.0, 0.0])
    right /= np.linalg.norm(right)
    down = _cross(f, right)
    c, s = np.cos(roll), np.sin(roll)
    return np.stack([c * right + s * down, -s * right + c * down, f])


@dataclass(frozen=True)
class Camera:
    """A pinhole camera rendering square ``size`` x ``size`` frames."""

    position: np.ndarray
    rotation: np.ndarray  # world -> camera, rows (right, down, forward)
    fov_deg: float
    size: int

    @functools.cached_property
    def focal(self) -> float:
        return float(0.5 * self.size / np.tan(np.radians(self.fov_deg) / 2))

    @classmethod
    def looking_at(cls, position, target, fov_deg: float, size: int, roll: float = 0.0) -> Camera:
        position = np.asarray(position, dtype=np.float64)
        forward = np.asarray(target, dtype=np.float64) - position
        return cls(position, look_rotation(forward, roll), fov_deg, size)

    def pixel_rays(self) -> np.ndarray:
        """Unit world-space ray direction through every pixel centre, shape (size, size, 3)."""
        return _camera_space_rays(self.size, self.fov_deg) @ self.rotation

    def project(self, point: np.ndarray) -> tuple[float, float, float]:
        """Pixel (u, v) and depth of a world point (depth <= 0: behind the camera)."""
        x, y, z = self.rotation @ (np.asarray(point) - self.position)
        if z <= 1e-6:
            return np.nan, np.nan, z
        f, c = self.focal, self.size / 2
        return f * x / z + c, f * y / z + c, z

    def sees(self, point: np.ndarray, margin: float = 0.0) -> bool:
        """Whether a world point projects inside the frame (``margin`` in pixels, >0 = inset)."""
        u, v, z = self.project(point)
        return z > 0 and margin <= u < self.size - margin and margin <= v < self.size - margin


@functools.lru_cache(maxsize=8)
def _camera_space_rays(size: int, fov_deg: float) -> np.ndarray:
    """Unit pixel rays in camera coordinates (rotating them keeps them unit length)."""
    focal = 0.5 * size / np.tan(np.radians(fov_deg) / 2)
    coords = (np.arange(size) + 0.5 - size / 2) / focal
    u, v = np.meshgrid(coords, coords)  # u: columns (right), v: rows (down)
    rays = np.stack([u, v, np.ones_like(u)], axis=-1)
    rays /= np.linalg.norm(rays, axis=-1, keepdims=True)
    rays.flags.writeable = False
    return rays


# --------------------------------------------------------------------------- primitives


def _rotation_z(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rotation_x(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _frame_with_z_along(axis: np.ndarray) -> np.ndarray:
    """A local->world rotation whose third column is ``axis`` (for tilted cylinders)."""
    z = axis / np.linalg.norm(axis)
    if z[2] > 1 - 1e-9:  # upright (cups, legs): the common case, no cross products needed
        return np.eye(3)
    helper = (1.0, 0.0, 0.0) if abs(z[0]) < 0.9 else (0.0, 1.0, 0.0)
    x = _cross(helper, z)
    x /= np.linalg.norm(x)
    return np.stack([x, _cross(z, x), z], axis=1)


def _two_tone(alt: np.ndarray | None, colour: Colour, alt_colour: Colour | None) -> np.ndarray:
    """Per-ray base colour: ``alt_colour`` where ``alt`` is set, else ``colour``."""
    if alt is None or alt_colour is None:
        return np.asarray(colour)[None, :]
    return np.where(alt[:, None], np.asarray(alt_colour), np.asarray(colour))


# Each primitive's ``hit(origin, rays)`` returns, for (N, 3) unit rays from one origin: the ray
# parameter of the first hit (inf = miss), the world normal there, and the base colour ((N, 3)
# or (1, 3)). Only the rays of the primitive's screen bounding box are passed in.


@dataclass
class Sphere:
    """A sphere; with ``rim_z`` it is cut off above that height and hollow (a bowl)."""

    center: np.ndarray
    radius: float
    colour: Colour
    rim_z: float | None = None
    inner_colour: Colour | None = None

    def bound(self) -> tuple[np.ndarray, float]:
        return self.center, self.radius

    def hit(self, origin: np.ndarray, rays: np.ndarray):
        oc = origin - self.center
        b = rays @ oc
        disc = b * b - (oc @ oc - self.radius**2)
        ok = disc >= 0
        root = np.sqrt(np.maximum(disc, 0.0))
        t_near = -b - root
        if self.rim_z is None:
            t = np.where(ok & (t_near > 1e-4), t_near, np.inf)
            normal = (oc + t_near[:, None] * rays) / self.radius
            return t, normal, _two_tone(None, self.colour, None)
        # Hollow bowl: the outer wall where the near hit is below the rim, else the inner wall.
        t_far = -b + root
        outer = ok & (origin[2] + t_near * rays[:, 2] <= self.rim_z) & (t_near > 1e-4)
        inner = ok & ~outer & (origin[2] + t_far * rays[:, 2] <= self.rim_z) & (t_far > 1e-4)
        t_any = np.where(outer, t_near, t_far)
        t = np.where(outer | inner, t_any, np.inf)
        normal = (oc + t_any[:, None] * rays) * (np.where(inner, -1.0, 1.0) / self.radius)[:, None]
        return t, normal, _two_tone(inner, self.colour, self.inner_colour)


@dataclass
class Cuboid:
    """An oriented box; ``top_colour`` paints its +z face (e.g. a lid's darker top)."""

    center: np.ndarray
    half: np.ndarray
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))  # local -> world
    colour: Colour = (0.5, 0.5, 0.5)
    top_colour: Colour | None = None

    def bound(self) -> tuple[np.ndarray, float]:
        return self.center, float(np.linalg.norm(self.half))

    def hit(self, origin: np.ndarray, rays: np.ndarray):
        o = self.rotation.T @ (origin - self.center)
        inv = 1.0 / (rays @ self.rotation + 1e-12)  # local ray directions, inverted (slabs)
        t1, t2 = (-self.half - o) * inv, (self.half - o) * inv
        t_lo = np.minimum(t1, t2)
        axis = t_lo.argmax(axis=1)
        rows = np.arange(len(axis))
        t_enter = t_lo[rows, axis]
        t_exit = np.maximum(t1, t2).min(axis=1)
        t = np.where((t_exit >= t_enter) & (t_enter > 1e-4), t_enter, np.inf)
        entering_sign = np.where(inv[rows, axis] > 0, -1.0, 1.0)
        normal = self.rotation.T[axis] * entering_sign[:, None]  # rows of R^T: local axes
        top = (axis == 2) & (entering_sign > 0) if self.top_colour is not None else None
        return t, normal, _two_tone(top, self.colour, self.top_colour)


@dataclass
class Cylinder:
    """A capped cylinder from ``base`` along ``axis``; ``top_colour`` paints the far cap."""

    base: np.ndarray
    axis: np.ndarray  # not normalised: its length is the cylinder's height
    radius: float
    colour: Colour
    top_colour: Colour | None = None

    def bound(self) -> tuple[np.ndarray, float]:
        half = np.linalg.norm(self.axis) / 2
        return self.base + self.axis / 2, float(np.hypot(half, self.radius))

    def hit(self, origin: np.ndarray, rays: np.ndarray):
        height = float(np.linalg.norm(self.axis))
        frame = _frame_with_z_along(self.axis)
        ox, oy, oz = frame.T @ (origin - self.base)
        d = rays @ frame
        dx, dy, dz = d[:, 0], d[:, 1], d[:, 2]
        a = np.maximum(dx * dx + dy * dy, 1e-12)
        b = ox * dx + oy * dy
        disc = b * b - a * (ox * ox + oy * oy - self.radius**2)
        t_side = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
        z_side = oz + t_side * dz
        side_ok = (disc >= 0) & (z_side >= 0) & (z_side <= height) & (t_side > 1e-4)
        t = np.where(side_ok, t_side, np.inf)
        # The camera is outside, so only the cap on its side can be the first hit.
        cap_z = height if oz > height else 0.0 if oz < 0 else None
        on_cap = None
        if cap_z is not None:
            t_cap = (cap_z - oz) / np.where(np.abs(dz) < 1e-12, 1e-12, dz)
            px, py = ox + t_cap * dx, oy + t_cap * dy
            on_cap = ~side_ok & (px * px + py * py <= self.radius**2) & (t_cap > 1e-4)
            t = np.where(on_cap, t_cap, t)
        t_s = np.where(side_ok, t_side, 0.0)[:, None]
        normal = ((ox + t_s * dx[:, None]) * frame[:, 0] + (oy + t_s * dy[:, None]) * frame[:, 1])
        normal /= self.radius
        if on_cap is not None:
            normal[on_cap] = frame[:, 2] * (1.0 if cap_z else -1.0)
        top = on_cap if cap_z else None
        return t, normal, _two_tone(top, self.colour, self.top_colour)


Primitive = Sphere | Cuboid | Cylinder


# --------------------------------------------------------------------------- the room

# Background materials, looked up by index so the room costs a few full-frame operations.
TABLE_M, FLOOR_A, FLOOR_B, WALL_M, WINDOW_M, DOOR_M, SKIRTING_M = range(7)
PALETTE = np.array(
    [
        [0.80, 0.66, 0.47],  # table (light wood)
        [0.55, 0.55, 0.58],  # floor tiles
        [0.45, 0.46, 0.50],
        [0.78, 0.80, 0.84],  # wall
        [0.55, 0.78, 0.95],  # window
        [0.45, 0.30, 0.20],  # door
        [0.35, 0.33, 0.32],  # skirting board
    ],
    dtype=np.float32,
)


@dataclass
class RoomView:
    """One camera's view of the empty room (table, floor, walls), with per-pixel depth.

    Static exo cameras compute this once per take; the ego camera once per frame.
    """

    camera: Camera
    rays: np.ndarray  # (n, n, 3) unit directions
    rgb: np.ndarray  # (n, n, 3) float32
    depth: np.ndarray  # (n, n)
    ground_xy: np.ndarray  # (n, n, 2) where each ray meets a horizontal surface
    flat: np.ndarray  # (n, n) bool: table or floor (shadows fall there)

    @classmethod
    def of(cls, camera: Camera) -> RoomView:
        rays = camera.pixel_rays()
        ox, oy, oz = (float(v) for v in camera.position)
        dx, dy, dz = np.moveaxis(rays, -1, 0).copy()  # contiguous planes: faster maths
        down = dz < -1e-9
        with np.errstate(divide="ignore", invalid="ignore"):
            t_table = np.where(down, -oz / dz, np.inf)
            t_floor = np.where(down, (-TABLE_HEIGHT - oz) / dz, np.inf)
            tx, ty = ox + t_table * dx, oy + t_table * dy
        on_table = down & (np.abs(tx) <= TABLE_HALF[0]) & (np.abs(ty) <= TABLE_HALF[1])
        # Walls: a vertical cylinder of ROOM_RADIUS around the table (the camera is inside).
        a = np.maximum(dx * dx + dy * dy, 1e-12)
        b = dx * ox + dy * oy
        c = ox * ox + oy * oy - ROOM_RADIUS**2
        t_wall = (-b + np.sqrt(np.maximum(b * b - a * c, 0.0))) / a
        is_floor = ~on_table & (t_floor <= t_wall)
        depth = np.where(on_table, t_table, np.minimum(t_floor, t_wall))
        x, y, z = ox + depth * dx, oy + depth * dy, oz + depth * dz

        x32, y32, z32 = x.astype(np.float32), y.astype(np.float32), z.astype(np.float32)
        # Landmarks on the wall (window, door) found by chord distance: no arctan needed.
        window = np.hypot(x32 - WINDOW_XY[0], y32 - WINDOW_XY[1]) < 0.9
        window &= (z32 > 0.25) & (z32 < 1.1)
        door = (np.hypot(x32 - DOOR_XY[0], y32 - DOOR_XY[1]) < 0.55) & (z32 < 1.3)
        panel = (np.floor(x32 * 2.5) + np.floor(y32 * 2.5)) % 2
        tiles = (np.floor(x32 * 2.5) + np.floor(y32 * 2.5)) % 2  # 0.4 m floor tiles
        grain = 0.96 + 0.04 * np.sin(x32 * 45 + 3 * np.sin(y32 * 9))
        rim = np.minimum(TABLE_HALF[0] - np.abs(x32), TABLE_HALF[1] - np.abs(y32)) < 0.015
        material = np.select(
            [on_table, is_floor, z32 < -TABLE_HEIGHT + 0.1, door, window],
            [TABLE_M, FLOOR_A + tiles.astype(np.int8), SKIRTING_M, DOOR_M, WINDOW_M],
            WALL_M,
        ).astype(np.int8)
        shade = np.where(on_table, grain * np.where(rim, 0.7, 1.0),
                         np.where(is_floor, 1.0, 0.9 + 0.1 * panel)).astype(np.float32)  # fmt: skip
        rgb = np.take(PALETTE, material, axis=0) * shade[..., None]
        return cls(camera, rays, rgb, depth, np.stack([x, y], -1), on_table | is_floor)


def _cast_shadows(view: RoomView, rgb: np.ndarray, shadows: np.ndarray) -> None:
    """Darken the table under each (x, y, radius) caster with a soft round blob, in place."""
    for x, y, r in shadows:
        box = _screen_box(view.camera, np.array([x, y, 0.0]), 2.0 * r)
        if box is None:
            continue
        y0, y1, x0, x1 = box
        g = view.ground_xy[y0:y1, x0:x1]
        d2 = (g[..., 0] - x) ** 2 + (g[..., 1] - y) ** 2
        factor = 1.0 - 0.45 * np.exp(-d2 / (r * r)) * view.flat[y0:y1, x0:x1]
        rgb[y0:y1, x0:x1] *= factor[..., None].astype(np.float32)


# --------------------------------------------------------------------------- rendering


def _screen_box(camera: Camera, center: np.ndarray, radius: float):
    """Pixel rows/cols that a bounding sphere may cover, or None if it is out of view."""
    x, y, z = camera.rotation @ (center - camera.position)
    n = camera.size
    if z + radius <= 1e-3:
        return None
    if z - radius <= 1e-2:  # the sphere reaches the camera plane: it may cover anything
        return 0, n, 0, n
    f, c = camera.focal, n / 2
    r_px = f * radius / (z - radius) + 1
    u, v = f * x / z + c, f * y / z + c
    x0, x1 = max(int(u - r_px), 0), min(int(u + r_px) + 1, n)
    y0, y1 = max(int(v - r_px), 0), min(int(v + r_px) + 1, n)
    if x0 >= x1 or y0 >= y1:
        return None
    return y0, y1, x0, x1


def _draw(view: RoomView, rgb: np.ndarray, depth: np.ndarray, primitives) -> np.ndarray:
    """Depth-test and Lambert-shade ``primitives`` into ``rgb``/``depth`` in place.

    Returns the mask of pixels the primitives cover.
    """
    camera = view.camera
    covered = np.zeros(depth.shape, dtype=bool)
    for prim in primitives:
        box = _screen_box(camera, *prim.bound())
        if box is None:
            continue
        y0, y1, x0, x1 = box
        sub_rays = view.rays[y0:y1, x0:x1].reshape(-1, 3)
        t, normal, colour = prim.hit(camera.position, sub_rays)
        t = t.reshape(y1 - y0, x1 - x0)
        closer = t < depth[y0:y1, x0:x1]
        if not closer.any():
            continue
        flat_closer = closer.reshape(-1)
        light = AMBIENT + DIFFUSE * np.maximum(normal[flat_closer] @ LIGHT, 0.0)
        colour = colour[flat_closer] if len(colour) > 1 else colour
        rgb[y0:y1, x0:x1][closer] = colour * light[:, None]
        depth[y0:y1, x0:x1][closer] = t[closer]
        covered[y0:y1, x0:x1] |= closer
    return covered


def render(view: RoomView, primitives: list[Primitive], shadows: np.ndarray) -> np.ndarray:
    """Render ``primitives`` into the view as an RGB uint8 frame."""
    return render_labelled(view, [primitives], shadows)[0]


def render_labelled(view: RoomView, parts: list[list[Primitive]], shadows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Render like :func:`render` with ``parts`` drawn in order, and say which part every pixel
    shows: an int16 map holding the index into ``parts``, or -1 for the room (pretraining labels)."""
    rgb, depth = view.rgb.copy(), view.depth.copy()
    _cast_shadows(view, rgb, shadows)
    owner = np.full(depth.shape, -1, dtype=np.int16)
    for i, prims in enumerate(parts):
        owner[_draw(view, rgb, depth, prims)] = i  # a later, nearer part overwrites: depth-tested
    return (np.minimum(rgb, 1.0) * 255 + 0.5).astype(np.uint8), owner


def bake(view: RoomView, primitives: list[Primitive], shadows: np.ndarray) -> RoomView:
    """The view with ``primitives`` and ``shadows`` drawn in: a static layer that later
    frames only add their moving parts to (exo cameras never move, most objects rarely do)."""
    rgb, depth = view.rgb.copy(), view.depth.copy()
    _cast_shadows(view, rgb, shadows)
    covered = _draw(view, rgb, depth, primitives)
    return RoomView(view.camera, view.rays, rgb, depth, view.ground_xy, view.flat & ~covered)


# --------------------------------------------------------------------------- scene parts


def darker(colour: Colour, factor: float = 0.45) -> Colour:
    return tuple(float(c) * factor for c in colour)  # type: ignore[return-value]


def yaw_rotation(yaw: float) -> np.ndarray:
    return _rotation_z(yaw)


def body_primitives(torso_xy: np.ndarray, head_yaw: float) -> list[Primitive]:
    """The camera wearer's legs, torso and head (exo views only: the ego camera is the head).

    The wearer faces +y; ``head_yaw`` (radians, + = left) turns the head fully and the torso a
    little, which is what an exo camera sees of a head turn.
    """
    rot = _rotation_z(0.35 * head_yaw)
    base = np.array([torso_xy[0], torso_xy[1], 0.0])
    prims: list[Primitive] = []
    for side in (-1, 1):
        foot = base + rot @ [side * 0.09, 0.0, -TABLE_HEIGHT]
        prims.append(Cylinder(foot, np.array([0, 0, TABLE_HEIGHT - 0.08]), 0.065, TROUSERS))
    prims.append(Cuboid(base + [0.0, 0.0, 0.17], np.array([0.18, 0.1, 0.27]), rot, SHIRT))
    head_rot = _rotation_z(head_yaw)
    head = base + np.array([0.0, 0.0, 0.63])
    prims.append(Sphere(head, 0.1, SKIN))
    prims.append(Sphere(head + head_rot @ [0.0, -0.03, 0.025], 0.095, HAIR))  # hair: back
    prims.append(Sphere(head + head_rot @ [0.0, 0.095, -0.01], 0.022, SKIN))  # nose: front
    return prims


def arm_primitives(
    torso_xy: np.ndarray, head_yaw: float, hands: np.ndarray, upper_arms: bool
) -> list[Primitive]:
    """Forearms and hands (both views) and upper arms (exo only: behind the ego camera)."""
    rot = _rotation_z(0.35 * head_yaw)
    base = np.array([torso_xy[0], torso_xy[1], 0.0])
    prims: list[Primitive] = []
    for side, hand in zip((-1, 1), hands):
        shoulder = base + rot @ [side * 0.2, 0.0, 0.4]
        elbow = (shoulder + hand) / 2 + np.array([side * 0.06, -0.04, -0.12])
        if upper_arms:
            prims.append(Cylinder(shoulder, elbow - shoulder, 0.042, SHIRT))
            prims.append(Sphere(elbow, 0.04, SKIN))
        prims.append(Cylinder(elbow, hand - elbow, 0.034, SKIN))
        prims.append(Sphere(hand, 0.045, SKIN))
    return prims


# Object geometry by kind (metres). ``height`` is what sits on top of the object's base point;
# ``footprint`` is the radius it occupies on the table.
KIND_GEOMETRY: dict[str, dict[str, float]] = {
    "cup": {"height": 0.11, "footprint": 0.045},
    "bowl": {"height": 0.085, "footprint": 0.085},
    "box": {"height": 0.116, "footprint": 0.1},
    "ball": {"height": 0.1, "footprint": 0.05},
    "block": {"height": 0.07, "footprint": 0.05},
}
BOX_HALF = np.array([0.085, 0.07, 0.05])
LID_HALF = np.array([0.09, 0.075, 0.008])
WALL = 0.008


def object_primitives(
    kind: str, colour: Colour, base: np.ndarray, yaw: float, lid_open: float = 0.0
) -> list[Primitive]:
    """Primitives of one object standing on ``base`` (bottom centre); ``lid_open`` in [0, 1]."""
    rot = _rotation_z(yaw)
    if kind == "ball":
        return [Sphere(base + [0, 0, 0.05], 0.05, colour)]
    if kind == "cup":
        return [Cylinder(base, np.array([0, 0, 0.11]), 0.045, colour, darker(colour, 0.35))]
    if kind == "block":
        return [Cuboid(base + [0, 0, 0.035], np.full(3, 0.035), rot, colour)]
    if kind == "bowl":
        r = KIND_GEOMETRY["bowl"]["height"]
        center = base + [0, 0, r]
        return [Sphere(center, r, colour, rim_z=float(center[2]), inner_colour=darker(colour, 0.7))]
    if kind == "box":
        return _box_primitives(colour, base, rot, lid_open)
    raise ValueError(f"unknown object kind {kind!r}")


def _box_primitives(colour: Colour, base: np.ndarray, rot: np.ndarray, lid_open: float):
    """A lidded box; once the lid lifts the body is drawn hollow so its contents show."""
    hx, hy, hz = BOX_HALF
    center = base + [0, 0, hz]
    if lid_open < 0.02:
        body: list[Primitive] = [Cuboid(center, BOX_HALF.copy(), rot, colour)]
    else:
        inner = darker(colour, 0.8)
        body = [Cuboid(base + [0, 0, WALL / 2], np.array([hx, hy, WALL / 2]), rot, inner)]
        for sx, sy, half in (
            (1, 0, [WALL / 2, hy, hz]), (-1, 0, [WALL / 2, hy, hz]),
            (0, 1, [hx, WALL / 2, hz]), (0, -1, [hx, WALL / 2, hz]),
        ):  # fmt: skip
            offset = rot @ [sx * (hx - WALL / 2), sy * (hy - WALL / 2), 0.0]
            body.append(Cuboid(center + offset, np.array(half), rot, colour))
    # The lid swings up about the hinge on the box's far edge.
    hinge = base + rot @ [0.0, LID_HALF[1], 2 * hz]
    lid_rot = rot @ rotation_x(-1.9 * lid_open)
    lid_center = hinge + lid_rot @ [0.0, -LID_HALF[1], LID_HALF[2]]
    lid = Cuboid(lid_center, LID_HALF.copy(), lid_rot, colour, top_colour=darker(colour, 0.85))
    return body + [lid]
