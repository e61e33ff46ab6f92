"""CRI log files, reading them as `kubectl logs` asks, and the termination message."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import count
from pathlib import Path

from devcluster.kubelet.logs import (
    MAX_LINE_BYTES,
    CriLogWriter,
    LogOptions,
    log_tail_message,
    parse_cri_timestamp,
    read_log,
    termination_message,
)

T0 = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)


def write_log(path: Path, chunks: list[tuple[str, bytes]]) -> None:
    """Writes chunks with a clock that advances one second per chunk."""
    ticks = count()
    writer = CriLogWriter(path, clock=lambda: T0 + timedelta(seconds=next(ticks)))
    for stream, data in chunks:
        writer.write(stream, data)
    writer.close()


def read(path: Path, **options: object) -> bytes:
    return b"".join(read_log(path, LogOptions(**options)))  # type: ignore[arg-type]


def test_lines_split_across_writes_and_streams(tmp_path: Path) -> None:
    log = tmp_path / "0.log"
    write_log(log, [("stdout", b"one\ntw"), ("stderr", b"err\n"), ("stdout", b"o\nthree"), ("stdout", b"")])
    assert read(log) == b"one\nerr\ntwo\nthree\n"
    first = log.read_bytes().splitlines()[0]
    assert first == b"2026-01-02T03:04:05.123456000Z stdout F one"


def test_long_lines_become_partial_records(tmp_path: Path) -> None:
    log = tmp_path / "0.log"
    write_log(log, [("stdout", b"x" * (MAX_LINE_BYTES + 10) + b"\n")])
    assert b" P " in log.read_bytes().splitlines()[0]
    assert read(log) == b"x" * (MAX_LINE_BYTES + 10) + b"\n"


def test_tail_limit_since_and_timestamps(tmp_path: Path) -> None:
    log = tmp_path / "0.log"
    write_log(log, [("stdout", f"line {i}\n".encode()) for i in range(1, 6)])
    assert read(log, tail_lines=2) == b"line 4\nline 5\n"
    assert read(log, tail_lines=0) == b""
    assert read(log, tail_lines=50) == read(log)
    assert read(log, limit_bytes=9) == b"line 1\nli"
    assert read(log, since=T0 + timedelta(seconds=3)) == b"line 4\nline 5\n"
    assert read(log, tail_lines=1, timestamps=True) == b"2026-01-02T03:04:09.123456000Z line 5\n"


def test_follow_waits_for_the_writer_to_finish(tmp_path: Path) -> None:
    log = tmp_path / "0.log"
    writer = CriLogWriter(log)
    writer.write("stdout", b"first\n")
    reads = iter([False, False, True])
    wrote_last: list[bool] = []

    def finished() -> bool:
        # The writer's last line lands just as it reports finished: the reader must still return it.
        done = next(reads, True)
        if done and not wrote_last:
            writer.write("stdout", b"last\n")
            wrote_last.append(True)
        return done

    assert b"".join(read_log(log, LogOptions(follow=True), finished, poll_seconds=0)) == b"first\nlast\n"
    writer.close()


def test_timestamps_round_trip() -> None:
    assert parse_cri_timestamp("2026-01-02T03:04:05.123456789Z") == T0


def test_termination_message_file_then_fallback_to_logs(tmp_path: Path) -> None:
    log = tmp_path / "0.log"
    write_log(log, [("stdout", b"step one\n"), ("stderr", b"fatal: broke\n")])
    message_file = tmp_path / "termination-log"
    message_file.write_text("")
    assert termination_message("FallbackToLogsOnError", 3, message_file, log) == "step one\nfatal: broke\n"
    assert termination_message("FallbackToLogsOnError", 0, message_file, log) == ""
    assert termination_message("File", 3, message_file, log) == ""
    message_file.write_text("written by the app")
    assert termination_message("FallbackToLogsOnError", 3, message_file, log) == "written by the app"
    message_file.write_text("x" * 5000)
    assert len(termination_message("File", 0, message_file, log)) == 4096


def test_fallback_takes_the_first_2048_bytes_of_the_last_80_lines(tmp_path: Path) -> None:
    log = tmp_path / "0.log"
    write_log(log, [("stdout", b"".join(f"{i:03d} {'y' * 40}\n".encode() for i in range(100)))])
    message = log_tail_message(log)
    assert message.startswith("020 ")  # lines 20..99 are the last 80
    assert len(message.encode()) == 2048
