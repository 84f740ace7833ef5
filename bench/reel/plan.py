"""The reel's shot list: who stands where, moving how, in which shot; deterministic in the seed.

Shots follow a repeating schedule of segments, each built for one scenario:

- cut chains: 2-3 shots in a row with the same screen slots, each slot taken by ANOTHER person at the cut
  (what a switched camera feed or a PTZ preset looks like to an IoU tracker); the slot patterns give
  known->known, known->stranger and stranger->known cuts in every cycle;
- crossings: two faces walking horizontally past each other, overlapping for a few frames;
- occlusions: one face covered by a grey or black rectangle for ~0.3 s, then seen again.

Every actor drifts and zooms a little within its shot, so it is video, not a still, and each new appearance
of a person uses their next photo (different photos of the same person across shots).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from bench.reel.cast import Person

WIDTH, HEIGHT, FPS = 1280, 720, 25
SLOTS = {1: (640,), 2: (420, 860), 3: (260, 640, 1020)}  # face centre x of each screen slot
FACE_PX = {1: (150, 200), 2: (130, 190), 3: (120, 150)}  # face box width range by actors on screen
OCCLUSION_FRAMES = 8  # 0.32 s at 25 fps
# (kind, slot patterns: one string per slot, one letter per shot: K known, S stranger). The cut-chain patterns
# make every cycle hold K->K, K->S and S->K cuts in the same slot.
SCHEDULE = (
    ("cut", ("KKS", "SKK")),
    ("cross", ("K", "S")),
    ("cut", ("KSK",)),
    ("occlude", ("K", "S")),
    ("cut", ("KS", "SK", "KK")),
    ("cross", ("K", "K")),
    ("occlude", ("K",)),
    ("cut", ("SK", "KS")),
)


@dataclass(frozen=True)
class Motion:
    """Face centre and face box width at the first and last frame of the shot (linear in between)."""

    start: tuple[float, float]
    end: tuple[float, float]
    face_start: float
    face_end: float

    def at(self, t: float) -> tuple[float, float, float]:
        """(centre x, centre y, face width) at `t` in [0, 1] through the shot."""
        return (self.start[0] + t * (self.end[0] - self.start[0]), self.start[1] + t * (self.end[1] - self.start[1]),
                self.face_start + t * (self.face_end - self.face_start))


@dataclass(frozen=True)
class Actor:
    """One person's appearance in one shot (the ground truth's appearance id)."""

    appearance: str  # "s07a1": shot 7, actor 1
    name: str
    enrolled: bool
    photo: Path
    face_box: tuple[float, float, float, float]  # in the photo
    motion: Motion
    occluded: tuple[int, int] | None = None  # [first, last) frame within the shot under the rectangle
    occluder: int = 0  # grey level of the rectangle


@dataclass(frozen=True)
class Shot:
    index: int
    kind: str  # cut | cross | occlude
    start: int  # first frame of the reel
    frames: int
    background: tuple  # ("plain", (b, g, r)) or ("blur", photo path)
    actors: tuple[Actor, ...]  # paste order: later actors are in front

    @property
    def end(self) -> int:
        return self.start + self.frames


class Casting:
    """Next known / next stranger, cycling through each pool; each person's photos in turn."""

    def __init__(self, cast: list[Person], rng: random.Random):
        self.pools = {True: [p for p in cast if p.enrolled], False: [p for p in cast if not p.enrolled]}
        for pool in self.pools.values():
            rng.shuffle(pool)
        self._next = {True: 0, False: 0}
        self._photo: dict[str, int] = {}

    def pick(self, known: bool, avoid: set[str]) -> tuple[Person, int]:
        pool = self.pools[known]
        for _ in range(len(pool)):
            person = pool[self._next[known] % len(pool)]
            self._next[known] += 1
            if person.name not in avoid:
                index = self._photo.get(person.name, 0)
                self._photo[person.name] = index + 1
                return person, index % len(person.photos)
        raise ValueError(f"not enough {'known' if known else 'stranger'} people to fill a shot")


def plan_reel(cast: list[Person], seconds: float, seed: int, backgrounds: list[Path],
              schedule: tuple = SCHEDULE) -> list[Shot]:
    """Shots until the reel is at least `seconds` long, cycling through `schedule` (segments of SCHEDULE's form)."""
    rng = random.Random(seed)
    casting = Casting(cast, rng)
    shots: list[Shot] = []
    start, step = 0, 0
    while start < seconds * FPS:
        kind, patterns = schedule[step % len(schedule)]
        step += 1
        for shot in _segment(kind, patterns, casting, rng, backgrounds, len(shots), start):
            shots.append(shot)
            start = shot.end
    return shots


def _segment(kind, patterns, casting, rng, backgrounds, first, start) -> list[Shot]:
    if kind == "cut":
        return _cut_chain(patterns, casting, rng, backgrounds, first, start)
    make = _crossing if kind == "cross" else _occlusion
    return [make(patterns, casting, rng, _background(rng, backgrounds), first, start)]


def _cut_chain(patterns, casting, rng, backgrounds, first, start) -> list[Shot]:
    """len(patterns[0]) shots sharing slots and face sizes; a cut replaces the person in every slot."""
    n = len(patterns)
    lo, hi = FACE_PX[n]
    slots = [(x + rng.uniform(-20, 20), HEIGHT / 2 + rng.uniform(-40, 40), rng.uniform(lo, hi)) for x in SLOTS[n]]
    background = _background(rng, backgrounds)  # one camera view: the background stays across its cuts
    shots, previous = [], [set() for _ in range(n)]
    for k in range(len(patterns[0])):
        index, frames = first + len(shots), round(rng.uniform(1.6, 2.6) * FPS)
        on_screen: set[str] = set()
        actors = []
        for s, (x, y, face) in enumerate(slots):
            person, photo = casting.pick(patterns[s][k] == "K", previous[s] | on_screen)
            on_screen.add(person.name)
            previous[s] = {person.name}
            actors.append(_actor(index, s, person, photo, _drift(rng, x, y, face)))
        shots.append(Shot(index, "cut", start, frames, background, tuple(actors)))
        start += frames
    return shots


def _crossing(patterns, casting, rng, background, index, start) -> Shot:
    frames = round(rng.uniform(2.6, 3.0) * FPS)
    y, face = HEIGHT / 2 + rng.uniform(-30, 30), rng.uniform(130, 160)
    left, right = rng.uniform(260, 340), rng.uniform(940, 1020)
    a, photo_a = casting.pick(patterns[0] == "K", set())
    b, photo_b = casting.pick(patterns[1] == "K", {a.name})
    # b walks behind a; a few pixels of vertical offset, so they overlap rather than coincide
    walk_a = Motion((left, y), (right, y + rng.uniform(-8, 8)), face, face * rng.uniform(0.95, 1.05))
    walk_b = Motion((right, y + 12), (left, y + 12 + rng.uniform(-8, 8)), face, face * rng.uniform(0.95, 1.05))
    actors = (_actor(index, 1, b, photo_b, walk_b), _actor(index, 0, a, photo_a, walk_a))
    return Shot(index, "cross", start, frames, background, actors)


def _occlusion(patterns, casting, rng, background, index, start) -> Shot:
    n = len(patterns)
    frames = round(rng.uniform(2.4, 3.0) * FPS)
    lo, hi = FACE_PX[n]
    actors, names = [], set()
    for s, x in enumerate(SLOTS[n]):
        person, photo = casting.pick(patterns[s] == "K", names)
        names.add(person.name)
        motion = _drift(rng, x + rng.uniform(-20, 20), HEIGHT / 2 + rng.uniform(-40, 40), rng.uniform(lo, hi))
        actors.append(_actor(index, s, person, photo, motion))
    first = round(frames * rng.uniform(0.4, 0.5))
    hidden = actors[0]  # the known one in every occlusion pattern
    actors[0] = Actor(hidden.appearance, hidden.name, hidden.enrolled, hidden.photo, hidden.face_box,
                      hidden.motion, (first, first + OCCLUSION_FRAMES), rng.choice((0, 128)))
    return Shot(index, "occlude", start, frames, background, tuple(actors))


def _drift(rng: random.Random, x: float, y: float, face: float) -> Motion:
    return Motion((x, y), (x + rng.uniform(-25, 25), y + rng.uniform(-12, 12)), face, face * rng.uniform(0.92, 1.08))


def _actor(shot: int, slot: int, person: Person, photo: int, motion: Motion) -> Actor:
    return Actor(f"s{shot:02d}a{slot}", person.name, person.enrolled, person.photos[photo], person.boxes[photo],
                 motion)


def _background(rng: random.Random, photos: list[Path]) -> tuple:
    if rng.random() < 0.5 or not photos:
        return ("plain", tuple(rng.randint(50, 190) for _ in range(3)))
    return ("blur", rng.choice(photos))
