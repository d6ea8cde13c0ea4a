"""The Lua scripts' sources: each ``lua/<name>.lua`` body gets a generated prelude of the
constants and validation helpers it uses, so Lua and Python cannot disagree (pure: no I/O)."""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from rtq_nb.protocol.defaults import DEFAULT_MAX_ATTEMPTS
from rtq_nb.protocol.encoding import (
    COMPLETED_ENVELOPE_HEAD,
    ENVELOPE_SIG,
    EXPIRED_ENVELOPE,
    EXPIRED_WHY,
)
from rtq_nb.protocol.jobs import JOB_FIELDS
from rtq_nb.protocol.keys import REQUEST_INFIX, RESULT_INFIX, STREAM_INFIX
from rtq_nb.protocol.records import Status
from rtq_nb.protocol.scores import PRIORITY_MAX, PRIORITY_MIN, SEQ_SPAN
from rtq_nb.protocol.stream import EntryKind, LeaseResult

__all__ = [
    "CONSTANTS",
    "DUPLICATE",
    "HELPERS",
    "INVALID",
    "MALFORMED",
    "MAX_RETENTION_S",
    "MAX_TIMEOUT_MS",
    "REAP_CUT",
    "Command",
    "PopKind",
    "Script",
    "render",
]

Command = tuple[Any, ...]

DUPLICATE = "RTQ_DUPLICATE"  # prefix of SUBMIT's error reply for an id already in use
MALFORMED = "RTQ_MALFORMED"  # prefix of an error reply: a key holds another type or bad data
INVALID = "RTQ_INVALID"  # prefix of an error reply: an argument out of range
REAP_CUT = "|"  # separates requeued from dead-lettered ids in REAP's reply
MAX_TIMEOUT_MS = 10 * 365 * 24 * 3600 * 1000  # ten years: far beyond any request, exact in Lua
MAX_RETENTION_S = 10 * 365 * 24 * 3600


class PopKind(str, enum.Enum):
    """What POP did with one popped id."""

    RUN = "run"  # leased to this worker: run it
    GONE = "gone"  # no record (TTL ran out, or a garbage id): dropped
    SKIP = "skip"  # not pending any more (expired now, cancelled or finished before)
    BAD = "bad"  # an invalid id, or a record key of another type: dropped alone, with why


def _lua(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (tuple, list)):
        return "{" + ", ".join(_lua(v) for v in value) + "}"
    text = str(value)
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


CONSTANTS: dict[str, object] = {
    "SEQ_SPAN": SEQ_SPAN,
    "REQ": REQUEST_INFIX,
    "RES": RESULT_INFIX,
    "STREAM": STREAM_INFIX,
    **{s.name: s.value for s in Status},
    **{f"K_{k.name}": k.value for k in EntryKind},
    **{f"LEASE_{r.name}": int(r) for r in LeaseResult},
    **{f"POP_{p.name}": p.value for p in PopKind},
    "JOB_FIELDS": JOB_FIELDS,
    "COMPLETED_ENVELOPE_HEAD": COMPLETED_ENVELOPE_HEAD,
    "ENVELOPE_SIG": ENVELOPE_SIG,
    "EXPIRED_ENVELOPE": EXPIRED_ENVELOPE,
    "EXPIRED_WHY": EXPIRED_WHY,
    "DUPLICATE": DUPLICATE,
    "MALFORMED": MALFORMED,
    "INVALID": INVALID,
    "REAP_CUT": REAP_CUT,
    "PRIORITY_MIN": PRIORITY_MIN,
    "PRIORITY_MAX": PRIORITY_MAX,
    "MAX_TIMEOUT_MS": MAX_TIMEOUT_MS,
    "MAX_RETENTION_S": MAX_RETENTION_S,
    "DEFAULT_MAX_ATTEMPTS": DEFAULT_MAX_ATTEMPTS,
}
# Lua helpers, declared in a script's prelude when it uses them (validation before writing).
HELPERS: dict[str, str] = {
    "bad_type": (
        "local function bad_type(key, want)\n"
        "  local t = redis.call('TYPE', key)['ok']\n"
        "  if t == want or t == 'none' then return false end\n"
        "  return key .. ' holds a ' .. t .. ', not a ' .. want\n"
        "end\n"
    ),
    "check_types": (
        "local function check_types(...)\n"
        "  local a = {...}\n"
        "  for i = 1, #a, 2 do\n"
        "    local bad = bad_type(a[i], a[i + 1])\n"
        "    if bad then return bad end\n"
        "  end\n"
        "  return false\n"
        "end\n"
    ),
    "valid_id": (
        "local function valid_id(id)\n"
        "  return #id <= 128 and string.find(id, '^[%w_.:%-]+$') ~= nil\n"
        "end\n"
    ),
}
HELPER_NEEDS = {"check_types": ("bad_type",)}

_CLOCK = (
    "local _t = redis.call('TIME')\n"
    "local now = tonumber(_t[1]) * 1000 + math.floor(tonumber(_t[2]) / 1000)\n"
)


def render(body: str) -> str:
    """A script's full source: the constants it uses, the server clock if it reads ``now``,
    then its body."""
    used = [n for n in CONSTANTS if re.search(rf"\b{n}\b", body)]
    prelude = "".join(f"local {n} = {_lua(CONSTANTS[n])}\n" for n in used)
    helpers = {h for h in HELPERS if re.search(rf"\b{h}\(", body)}
    helpers |= {d for h in helpers for d in HELPER_NEEDS.get(h, ())}
    prelude += "".join(src for name, src in HELPERS.items() if name in helpers)
    if re.search(r"\bnow\b", body):
        prelude += _CLOCK
    return prelude + body


@dataclass(frozen=True)
class Script:
    """One Lua script: its rendered source and SHA1 (what ``EVALSHA`` names)."""

    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())

    @classmethod
    def load(cls, name: str) -> Script:
        body = (resources.files(__package__) / "lua" / f"{name}.lua").read_text("utf-8")
        return cls(name, render(body))

    def cmd(self, keys: Sequence[object], args: Sequence[object]) -> Command:
        return ("EVALSHA", self.sha, len(keys), *keys, *args)
