"""Priority scores for the pending sorted set (pure logic, no I/O).

Workers pop the *highest* score first (ZPOPMAX). A request's score is::

    score = priority * 2**40 - seq

where ``seq`` is the queue's arrival counter (INCR in the submit script, 1 <= seq < 2**40).
Higher priority always wins; among equal priorities an earlier arrival has a smaller ``seq``
and so a higher score: FIFO, however many requests arrive per millisecond, with no clock.
For |priority| <= 1000 every score is an integer below 2**53 and thus exact as a double
(the type Redis and Lua use for scores). Scripts format scores with ``%d``, never ``%.14g``.
"""

from __future__ import annotations

from rtq_nb.errors import ConfigurationError

__all__ = [
    "PRIORITY_MAX",
    "PRIORITY_MIN",
    "SEQ_BITS",
    "SEQ_SPAN",
    "check_priority",
    "decode_priority",
    "encode_score",
    "priority_bounds",
]

PRIORITY_MIN = -1000
PRIORITY_MAX = 1000
SEQ_BITS = 40
SEQ_SPAN = 1 << SEQ_BITS  # 1_099_511_627_776 submissions per queue before wrap-around


def check_priority(priority: int) -> int:
    """Validate a priority; bools and floats are rejected to avoid silent truncation."""
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise ConfigurationError(
            f"priority must be an int in [{PRIORITY_MIN}, {PRIORITY_MAX}], got {priority!r}"
        )
    if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise ConfigurationError(
            f"priority {priority} is out of range [{PRIORITY_MIN}, {PRIORITY_MAX}]"
        )
    return priority


def encode_score(priority: int, seq: int) -> int:
    """Score for a request of ``priority`` that arrived as number ``seq`` of its queue."""
    if not 1 <= seq < SEQ_SPAN:
        raise ConfigurationError(f"sequence number {seq} out of range [1, 2**{SEQ_BITS})")
    return priority * SEQ_SPAN - seq


def decode_priority(score: float) -> int:
    """The priority a score was built from."""
    return int(score // SEQ_SPAN) + 1


def priority_bounds(priority: int) -> tuple[int, int]:
    """Inclusive (min, max) score range holding every request of ``priority``."""
    top = priority * SEQ_SPAN
    return top - (SEQ_SPAN - 1), top - 1
