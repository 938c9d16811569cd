"""The 30 target subjects of the tiny world (paper Sec. VI-A3: humans, animals, buildings, ten
each, described by detailed prompts). Stored in ``data/subjects.json`` with their seeds.

Prompts are distinct attribute combinations whose words are shared across subjects (every
colour, pattern, accessory and background word of a subject also occurs in other subjects), so no
single word identifies a subject.
"""
from __future__ import annotations

import dataclasses
import json
from functools import lru_cache
from pathlib import Path

from .render import Spec

__all__ = ["Subject", "target_subjects", "get_subject", "subject_ids", "target_specs", "DATA_FILE"]

DATA_FILE = Path(__file__).resolve().parent / "data" / "subjects.json"


@dataclasses.dataclass(frozen=True)
class Subject:
    """A target subject: ``id`` like ``"animal_03"``, its category, spec and canonical prompt."""
    id: str
    category: str
    spec: Spec
    prompt: str


@lru_cache(maxsize=1)
def _load() -> dict:
    doc = json.loads(DATA_FILE.read_text())
    for s in doc["subjects"]:
        spec = Spec.from_dict(s["spec"])
        if spec.prompt != s["prompt"] or spec.category != s["category"]:
            raise ValueError(f"{DATA_FILE}: subject {s['id']} spec and prompt disagree")
        want = {"human": {"emblem", "emblem_color", "hair"}, "animal": {"ears", "tail", "patch_color"},
                "building": {"windows", "door", "band_color"}}[spec.category]
        if set(s.get("hidden", {})) != want:
            raise ValueError(f"{DATA_FILE}: subject {s['id']} needs hidden marks {sorted(want)}")
    return doc


@lru_cache(maxsize=1)
def target_subjects() -> tuple[Subject, ...]:
    """All 30 target subjects, ordered human_00..09, animal_00..09, building_00..09."""
    return tuple(Subject(s["id"], s["category"], Spec.from_dict(s["spec"]), s["prompt"])
                 for s in _load()["subjects"])


def subject_ids() -> tuple[str, ...]:
    return tuple(s.id for s in target_subjects())


def get_subject(subject_id: "str | Subject") -> Subject:
    """The subject with this id (a Subject passes through). Raises KeyError naming the id."""
    if isinstance(subject_id, Subject):
        return subject_id
    for s in target_subjects():
        if s.id == subject_id:
            return s
    raise KeyError(f"unknown subject id {subject_id!r}; known: {', '.join(subject_ids())}")


@lru_cache(maxsize=1)
def target_specs() -> frozenset:
    """The set of the 30 target Specs (the generic corpus excludes them)."""
    return frozenset(s.spec for s in target_subjects())
