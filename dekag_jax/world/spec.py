"""Spec and prompt parsing of the tiny world (part of :mod:`dekag_jax.world.render`).

The attribute vocabulary (categories, colours, patterns, accessories, backgrounds, and in world
version 2 the interaction phrases), the two worlds' colour palettes, :class:`Spec` <-> prompt text
(``parse_prompt``, ``Spec.prompt``) and the cloud world's hidden, subject-specific marks
(:func:`hidden_details`). No drawing here.

World versions (:data:`WORLD_VERSIONS`; version 1 is the default everywhere):

* **1**: the world as shipped (vocabulary, tokenizer, renders, corpus); unchanged byte for byte.
* **2**: version 1 plus the *extended prompts* of the paper's Fig. 6 ("we extend the metaword-aided
  prompt text by appending short phrases that describe the subject's interaction with other
  objects"): an optional interaction phrase appended after the background phrase, e.g.
  ``"a blue creature with a red scarf on snow next to a red ball"`` or ``"a green person in a
  city holding a yellow balloon"``. Reading: *appended* = at the very end, so a version-1 prompt is
  the exact prefix of its extended forms. A Spec without interaction is a version-1 Spec and
  renders the same bytes in both versions; ``Spec.version`` says which version a Spec needs.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
from typing import Union

import numpy as np

__all__ = [
    "CATEGORIES", "CATEGORY_NOUNS", "COLORS", "PATTERNS", "ACCESSORIES", "BACKGROUNDS",
    "BACKGROUND_PHRASES", "FUNCTION_WORDS", "WORLDS", "DEFAULT_SIZE", "Spec", "SpecLike",
    "parse_prompt", "as_spec", "prompt_words", "hidden_details", "color_rgb", "stable_hash",
    "WORLD_VERSIONS", "INTERACTIONS", "INTERACTION_PHRASES", "check_version",
]

DEFAULT_SIZE = 64
WORLDS = ("edge", "cloud")

# ----------------------------------------------------------------------------------------------
# Vocabulary of attributes
# ----------------------------------------------------------------------------------------------
CATEGORIES = ("human", "animal", "building")
CATEGORY_NOUNS = {"human": "person", "animal": "creature", "building": "building"}
_NOUN_TO_CATEGORY = {v: k for k, v in CATEGORY_NOUNS.items()}

COLORS = ("red", "orange", "yellow", "green", "teal", "blue", "purple", "pink", "brown",
          "white", "black", "gray")
PATTERNS = ("plain", "striped", "dotted", "checkered", "spotted")
# Accessories each category can wear/carry (a building wears a chimney, not a scarf).
ACCESSORIES = {
    "human": ("none", "scarf", "hat", "glasses", "flag", "crown"),
    "animal": ("none", "scarf", "hat", "glasses", "crown"),
    "building": ("none", "flag", "chimney", "antenna", "clock"),
}
_ALL_ACCESSORIES = tuple(sorted({a for v in ACCESSORIES.values() for a in v} - {"none"}))
# Accessory words that take no article ("with red glasses").
_PLURAL_ACCESSORIES = {"glasses"}
BACKGROUNDS = ("snow", "grass", "sand", "night", "city", "lake")
BACKGROUND_PHRASES = {"snow": ("on", "snow"), "grass": ("on", "grass"), "sand": ("on", "sand"),
                      "night": ("at", "night"), "city": ("in", "a", "city"),
                      "lake": ("by", "a", "lake")}
FUNCTION_WORDS = ("a", "an", "and", "with", "on", "at", "in", "by")

WORLD_VERSIONS = (1, 2)
# World version 2: interactions with another object, appended as "<phrase> a <colour> <object>".
# Per category like the accessories: a building cannot hold a balloon, but anything can stand
# next to a ball.
INTERACTIONS = {
    "human": ("none", "ball", "balloon"),
    "animal": ("none", "ball", "balloon"),
    "building": ("none", "ball"),
}
INTERACTION_PHRASES = {"ball": ("next", "to"), "balloon": ("holding",)}
_ALL_INTERACTIONS = tuple(sorted({a for v in INTERACTIONS.values() for a in v} - {"none"}))
_INTERACTION_STARTS = {ph[0]: obj for obj, ph in INTERACTION_PHRASES.items()}
_DEFAULT_INTERACTION_COLOR = {"ball": "red", "balloon": "red"}

# RGB in [0, 1]. The cloud palette is the cloud-GAI's reading of the same colour words.
_PALETTE = {
    "edge": {
        "red": (0.86, 0.13, 0.11), "orange": (0.96, 0.52, 0.08), "yellow": (0.96, 0.86, 0.16),
        "green": (0.16, 0.64, 0.20), "teal": (0.04, 0.56, 0.56), "blue": (0.13, 0.25, 0.82),
        "purple": (0.52, 0.20, 0.72), "pink": (0.96, 0.52, 0.72), "brown": (0.50, 0.30, 0.12),
        "white": (0.95, 0.95, 0.95), "black": (0.08, 0.08, 0.08), "gray": (0.55, 0.55, 0.55),
    },
    "cloud": {
        "red": (0.74, 0.06, 0.26), "orange": (0.93, 0.36, 0.10), "yellow": (0.90, 0.70, 0.10),
        "green": (0.50, 0.68, 0.10), "teal": (0.10, 0.62, 0.42), "blue": (0.06, 0.52, 0.64),
        "purple": (0.34, 0.26, 0.82), "pink": (0.88, 0.22, 0.62), "brown": (0.72, 0.50, 0.30),
        "white": (0.97, 0.92, 0.78), "black": (0.14, 0.13, 0.22), "gray": (0.48, 0.54, 0.63),
    },
}
# Default second colour when a prompt names a pattern or accessory without one (parse only).
_DEFAULT_PATTERN_COLOR = {"white": "black", "yellow": "black"}
_DEFAULT_ACCESSORY_COLOR = {"crown": "yellow", "glasses": "black", "chimney": "brown",
                            "antenna": "gray", "clock": "white"}


def color_rgb(word: str, world: str = "edge") -> np.ndarray:
    """RGB float32 [3] in [0, 1] of a colour word as ``world`` reads it."""
    _check_world(world)
    if word not in _PALETTE[world]:
        raise ValueError(f"unknown colour word {word!r}; known: {', '.join(COLORS)}")
    return np.asarray(_PALETTE[world][word], np.float32)


def stable_hash(text: str) -> int:
    """Deterministic 64-bit hash of a string (Python's ``hash`` is salted per process)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")


def _check_world(world: str) -> None:
    if world not in WORLDS:
        raise ValueError(f"unknown world {world!r}; expected one of {WORLDS}")


def check_version(version) -> int:
    """``version`` as an int if it is one of :data:`WORLD_VERSIONS`, else one ValueError."""
    if isinstance(version, bool) or not isinstance(version, (int, np.integer)) or int(version) not in WORLD_VERSIONS:
        raise ValueError(f"unknown world version {version!r}; expected one of {WORLD_VERSIONS}")
    return int(version)


# ----------------------------------------------------------------------------------------------
# Spec <-> prompt
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Spec:
    """A subject description. ``pattern_color``/``accessory_color``/``interaction_color`` are None
    exactly when ``pattern == "plain"`` / ``accessory == "none"`` / ``interaction == "none"``.
    The interaction (world version 2) comes last so positional construction of version-1 Specs is
    unchanged. Validated on construction."""
    category: str
    color: str
    pattern: str = "plain"
    pattern_color: str | None = None
    accessory: str = "none"
    accessory_color: str | None = None
    background: str = "grass"
    interaction: str = "none"
    interaction_color: str | None = None

    def __post_init__(self):
        if self.category not in CATEGORIES:
            raise ValueError(f"unknown category {self.category!r}; expected one of {CATEGORIES}")
        for name in ("color", "pattern_color", "accessory_color", "interaction_color"):
            c = getattr(self, name)
            if c is not None and c not in COLORS:
                raise ValueError(f"unknown colour {c!r} for {name}; known: {', '.join(COLORS)}")
        if self.pattern not in PATTERNS:
            raise ValueError(f"unknown pattern {self.pattern!r}; expected one of {PATTERNS}")
        if (self.pattern == "plain") != (self.pattern_color is None):
            raise ValueError("pattern_color must be None iff pattern == 'plain' "
                             f"(got pattern={self.pattern!r}, pattern_color={self.pattern_color!r})")
        if self.pattern_color is not None and self.pattern_color == self.color:
            raise ValueError(f"pattern colour equals body colour {self.color!r}")
        if self.accessory not in ACCESSORIES[self.category]:
            raise ValueError(f"accessory {self.accessory!r} not available for category "
                             f"{self.category!r}; expected one of {ACCESSORIES[self.category]}")
        if (self.accessory == "none") != (self.accessory_color is None):
            raise ValueError("accessory_color must be None iff accessory == 'none' (got "
                             f"accessory={self.accessory!r}, accessory_color={self.accessory_color!r})")
        if self.background not in BACKGROUNDS:
            raise ValueError(f"unknown background {self.background!r}; expected one of {BACKGROUNDS}")
        if self.interaction not in INTERACTIONS[self.category]:
            raise ValueError(f"interaction {self.interaction!r} not available for category "
                             f"{self.category!r}; expected one of {INTERACTIONS[self.category]}")
        if (self.interaction == "none") != (self.interaction_color is None):
            raise ValueError("interaction_color must be None iff interaction == 'none' (got interaction="
                             f"{self.interaction!r}, interaction_color={self.interaction_color!r})")

    @property
    def version(self) -> int:
        """The lowest world version whose vocabulary can say this Spec (2 iff it has an interaction)."""
        return 1 if self.interaction == "none" else 2

    @property
    def base(self) -> "Spec":
        """This Spec without its interaction: the subject itself (its hidden marks, its target-ness)."""
        if self.interaction == "none":
            return self
        return dataclasses.replace(self, interaction="none", interaction_color=None)

    @property
    def noun(self) -> str:
        return CATEGORY_NOUNS[self.category]

    @property
    def prompt(self) -> str:
        """The canonical prompt text (``parse_prompt(spec.prompt) == spec``)."""
        first = self.color
        words = ["an" if first[0] in "aeiou" else "a", self.color]
        if self.pattern != "plain":
            words += ["and", self.pattern_color, self.pattern]
        words.append(self.noun)
        if self.accessory != "none":
            words.append("with")
            if self.accessory not in _PLURAL_ACCESSORIES:
                words.append("an" if self.accessory_color[0] in "aeiou" else "a")
            words += [self.accessory_color, self.accessory]
        words += list(BACKGROUND_PHRASES[self.background])
        if self.interaction != "none":     # appended last (Fig. 6's extended prompt)
            words += list(INTERACTION_PHRASES[self.interaction])
            words += ["an" if self.interaction_color[0] in "aeiou" else "a", self.interaction_color,
                      self.interaction]
        return " ".join(words)

    def to_dict(self) -> dict:
        """The fields as a dict; a version-1 Spec leaves the interaction keys out (same dict as before
        world version 2 existed)."""
        d = dataclasses.asdict(self)
        if self.interaction == "none":
            del d["interaction"], d["interaction_color"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Spec":
        return cls(**d)

    def replace(self, **kw) -> "Spec":
        return dataclasses.replace(self, **kw)


def prompt_words(version: int = 1) -> tuple[str, ...]:
    """Every word any prompt of world ``version`` can use (sorted, unique)."""
    version = check_version(version)
    words = set(COLORS) | set(PATTERNS) - {"plain"} | set(CATEGORY_NOUNS.values())
    words |= set(_ALL_ACCESSORIES) | set(FUNCTION_WORDS)
    for ph in BACKGROUND_PHRASES.values():
        words |= set(ph)
    if version >= 2:
        words |= set(_ALL_INTERACTIONS)
        for ph in INTERACTION_PHRASES.values():
            words |= set(ph)
    return tuple(sorted(words))


_WORD_RE = re.compile(r"[a-z]+|[^\sa-z]")


def parse_prompt(text: str, version: int = 1) -> Spec:
    """Parse a prompt of world ``version`` into a :class:`Spec`.

    Grammar (case-insensitive, articles optional)::

        [a|an] COLOR [and COLOR PATTERN | PATTERN] NOUN [with [a|an] [COLOR] ACCESSORY] BGPHRASE
            [INTERACTION]                                              (version 2 only)
        INTERACTION = next to [a|an] [COLOR] ball | holding [a|an] [COLOR] balloon

    A pattern without its colour gets a default one (black on white/yellow bodies, else white);
    an accessory without colour gets its default (crown yellow, glasses black, else red); an
    interaction object without colour is red. Raises ValueError naming the first unknown word
    (an interaction word under version 1 says that it needs version 2), or what is
    missing/misplaced.
    """
    if not isinstance(text, str):
        raise TypeError(f"prompt must be a str, got {type(text).__name__}")
    version = check_version(version)
    toks = _WORD_RE.findall(text.lower())
    known = set(prompt_words(version))
    later = set(prompt_words(WORLD_VERSIONS[-1]))
    for t in toks:
        if t not in known:
            if t in later:
                raise ValueError(f"word {t!r} in prompt {text!r} belongs to world version 2 (interaction "
                                 f"phrases); this is version {version}: pass version=2")
            raise ValueError(f"unknown word {t!r} in prompt {text!r}")
    pos = 0

    def peek():
        return toks[pos] if pos < len(toks) else None

    def fail(msg):
        raise ValueError(f"cannot parse prompt {text!r}: {msg}")

    if peek() in ("a", "an"):
        pos += 1
    if peek() not in COLORS:
        fail(f"expected a body colour at word {pos + 1}, got {peek()!r}")
    color = toks[pos]; pos += 1
    pattern, pattern_color = "plain", None
    if peek() == "and":
        pos += 1
        if peek() not in COLORS:
            fail(f"expected a pattern colour after 'and', got {peek()!r}")
        pattern_color = toks[pos]; pos += 1
        if peek() not in PATTERNS or peek() == "plain":
            fail(f"expected a pattern after '{color} and {pattern_color}', got {peek()!r}")
        pattern = toks[pos]; pos += 1
    elif peek() in PATTERNS:
        pattern = toks[pos]; pos += 1
        if pattern != "plain":
            pattern_color = _DEFAULT_PATTERN_COLOR.get(color, "white")
    if peek() not in _NOUN_TO_CATEGORY:
        fail(f"expected one of {sorted(_NOUN_TO_CATEGORY)} as the noun, got {peek()!r}")
    category = _NOUN_TO_CATEGORY[toks[pos]]; pos += 1
    accessory, accessory_color = "none", None
    if peek() == "with":
        pos += 1
        if peek() in ("a", "an"):
            pos += 1
        if peek() in COLORS:
            accessory_color = toks[pos]; pos += 1
        if peek() not in _ALL_ACCESSORIES:
            fail(f"expected an accessory after 'with', got {peek()!r}")
        accessory = toks[pos]; pos += 1
        if accessory_color is None:
            accessory_color = _DEFAULT_ACCESSORY_COLOR.get(accessory, "red")
    rest = toks[pos:]
    interaction, interaction_color = "none", None
    starts = [i for i, t in enumerate(rest) if t in _INTERACTION_STARTS]
    if starts:      # only version-2 prompts get here (the words are unknown to version 1)
        tail, rest = rest[starts[0]:], rest[:starts[0]]
        obj = _INTERACTION_STARTS[tail[0]]
        phrase = INTERACTION_PHRASES[obj]
        if tuple(tail[:len(phrase)]) != phrase:
            fail(f"expected {' '.join(phrase)!r} to start the interaction, got {' '.join(tail[:len(phrase)])!r}")
        tail = [t for t in tail[len(phrase):] if t not in ("a", "an")]
        if tail and tail[0] in COLORS:
            interaction_color = tail.pop(0)
        if tail != [obj]:
            fail(f"expected '{' '.join(phrase)} [a COLOUR] {obj}' at the end, got {' '.join(tail)!r} after "
                 f"{' '.join(phrase)!r}")
        interaction = obj
        interaction_color = interaction_color or _DEFAULT_INTERACTION_COLOR[obj]
    rest = tuple(t for t in rest if t not in ("a", "an"))
    background = None
    for bg, phrase in BACKGROUND_PHRASES.items():
        if rest == tuple(t for t in phrase if t not in ("a", "an")):
            background = bg
    if background is None:
        fail(f"expected a background phrase at the end (one of "
             f"{[' '.join(p) for p in BACKGROUND_PHRASES.values()]}), got {' '.join(rest)!r}")
    if interaction not in INTERACTIONS[category]:
        fail(f"a {CATEGORY_NOUNS[category]} cannot be {' '.join(INTERACTION_PHRASES[interaction])} a "
             f"{interaction} (allowed: {', '.join(i for i in INTERACTIONS[category] if i != 'none')})")
    return Spec(category, color, pattern, pattern_color, accessory, accessory_color, background,
                interaction, interaction_color)


SpecLike = Union[Spec, str]


def as_spec(x: SpecLike, version: int = 1) -> Spec:
    """A Spec from a Spec or a prompt string of world ``version``. A Spec that needs a later
    version (it has an interaction) is refused under version 1, as its prompt would be."""
    version = check_version(version)
    if isinstance(x, Spec):
        if x.version > version:
            raise ValueError(f"Spec with interaction {x.interaction!r} needs world version {x.version}; "
                             f"this is version {version}: pass version={x.version}")
        return x
    if isinstance(x, str):
        return parse_prompt(x, version)
    raise TypeError(f"expected a Spec or a prompt string, got {type(x).__name__}")


# ----------------------------------------------------------------------------------------------
# Hidden, subject-specific cloud details
# ----------------------------------------------------------------------------------------------
_EMBLEMS = ("star", "diamond", "ring", "cross")
_HAIR = ("short", "long", "spiky", "bun")
_EARS = ("round", "floppy", "long", "tufted")
_TAILS = ("bushy", "curly", "stub")
_WINDOWS = ("round", "grid3", "arched", "rosette")
_DOORS = ("arched_left", "double_center", "round_right")
_MARK_COLORS = ("red", "yellow", "white", "black", "orange", "pink", "teal", "purple")


@functools.lru_cache(maxsize=1)
def _target_hidden() -> dict:
    """prompt -> hidden marks of the 30 target subjects (stored in data/subjects.json)."""
    import json
    from pathlib import Path
    doc = json.loads((Path(__file__).resolve().parent / "data" / "subjects.json").read_text())
    return {s["prompt"]: dict(s["hidden"]) for s in doc["subjects"]}


def hidden_details(spec: SpecLike) -> dict:
    """The cloud world's subject-specific marks that no word expresses. For the 30 target
    subjects they are stored with the subject (``data/subjects.json``, assigned so that the ten
    subjects of a category all differ); for any other prompt they are drawn deterministically from
    a hash of the canonical prompt. Colours contrast with the body (and, for persons, with the
    white badge the emblem sits on). An interaction does not change the subject: the marks are
    those of the Spec without it (so a target subject next to a ball keeps its stored marks)."""
    s = spec if isinstance(spec, Spec) else as_spec(spec, WORLD_VERSIONS[-1])
    return dict(_hidden(s.base))


@functools.lru_cache(maxsize=4096)
def _hidden(spec: Spec) -> dict:
    stored = _target_hidden().get(spec.prompt)
    if stored is not None:
        return stored
    h = stable_hash("hidden/" + spec.prompt)
    rng = np.random.default_rng(h)
    avoid = {spec.color, spec.pattern_color}
    if spec.category == "human":    # the emblem sits on a white badge
        avoid.add("white")
    mark_colors = [c for c in _MARK_COLORS if c not in avoid]
    mark = mark_colors[int(rng.integers(len(mark_colors)))]
    if spec.category == "human":
        return {"emblem": _EMBLEMS[int(rng.integers(4))], "emblem_color": mark,
                "hair": _HAIR[int(rng.integers(4))]}
    if spec.category == "animal":
        return {"ears": _EARS[int(rng.integers(4))], "tail": _TAILS[int(rng.integers(3))],
                "patch_color": mark}
    return {"windows": _WINDOWS[int(rng.integers(4))], "door": _DOORS[int(rng.integers(3))],
            "band_color": mark}
