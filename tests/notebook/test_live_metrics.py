"""Stream metrics from one clock (the Redis server's): a fake clock of entry ids and records."""

from __future__ import annotations

from rtq_nb.notebook.live_metrics import LiveMetrics
from rtq_nb.protocol.records import Chunk, RequestRecord, Status, Usage


def rec(**kw: object) -> RequestRecord:
    base = {"id": "r", "client": "c", "queue": "q", "priority": 0, "status": Status.RUNNING}
    return RequestRecord(**{**base, **kw})  # type: ignore[arg-type]


def chunk(ms: int, pieces: int, seq: int = 0) -> Chunk:
    return Chunk("x" * pieces, seq=seq, pieces=pieces, entry_id=f"{ms}-{seq}")


def test_a_200_tok_per_s_model_read_in_one_late_burst_reads_200() -> None:
    m = LiveMetrics()
    m.on_record(rec(created_ms=1_000, started_ms=1_050), server_now_ms=1_060)
    assert m.snapshot().queue_wait_ms == 50 and m.snapshot().ttft_ms is None
    # 100 tokens at 200 tok/s, flushed every 20 ms (4 per chunk), all read by the kernel at once
    for i in range(25):
        m.on_chunk(chunk(1_100 + 20 * i, 4, seq=4 * i))
    s = m.snapshot()
    assert s.ttft_ms == 100 and s.tokens == 100
    assert s.tokens_per_s is not None and abs(s.tokens_per_s - 200) < 1
    m.on_chunk(chunk(1_580, 4, seq=96))  # a chunk seen twice (a retried read) counts once
    assert m.snapshot().tokens == 100
    m.on_record(
        rec(
            created_ms=1_000,
            started_ms=1_050,
            finished_ms=1_600,
            prompt_tokens=7,
            completion_tokens=100,
            status=Status.COMPLETED,
        )
    )
    end = m.snapshot()
    assert end.ttft_ms == 100 and end.queue_wait_ms == 50 and end.elapsed_ms == 600
    assert end.usage == Usage(7, 100) and abs((end.tokens_per_s or 0) - 200) < 1


def test_queued_wait_grows_with_the_server_clock_then_freezes() -> None:
    m = LiveMetrics()
    m.on_record(rec(created_ms=5_000, status=Status.PENDING), server_now_ms=5_400)
    assert m.snapshot().queue_wait_ms == 400
    m.on_record(rec(created_ms=5_000, started_ms=5_900), server_now_ms=6_500)
    assert m.snapshot().queue_wait_ms == 900  # frozen at the start, not growing


def test_reset_for_a_retry() -> None:
    m = LiveMetrics(created_ms=0)
    m.on_chunk(chunk(10, 3))
    m.reset()
    m.on_chunk(chunk(500, 2, seq=0))
    assert m.snapshot().tokens == 2 and m.snapshot().ttft_ms == 500


def test_the_records_first_chunk_time_wins() -> None:
    m = LiveMetrics()
    m.on_record(rec(created_ms=0, started_ms=10), server_now_ms=20)
    m.on_chunk(chunk(101, 1))  # the entry id's millisecond
    assert m.snapshot().ttft_ms == 101
    m.on_record(rec(created_ms=0, started_ms=10, first_chunk_ms=100))
    assert m.snapshot().ttft_ms == 100  # = the record's ttfc_ms, exactly
