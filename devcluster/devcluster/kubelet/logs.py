"""Container logs in the CRI format, and reading them back as `kubectl logs` asks.

Each line of a log file is `<RFC3339Nano time> <stdout|stderr> <F|P> <content>`, as containerd writes them:
F ends a line, P is a piece of a longer one. Keeping the time per line gives `timestamps` and
`sinceSeconds`, exactly as the real kubelet serves them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

MAX_LINE_BYTES = 16 * 1024  # containerd's limit: longer lines are split into P records
TERMINATION_LOG_LINES = 80  # kubecontainer.MaxContainerTerminationMessageLogLines
TERMINATION_LOG_BYTES = 2048  # kubecontainer.MaxContainerTerminationMessageLogLength
TERMINATION_FILE_BYTES = 4096  # kubecontainer.MaxContainerTerminationMessageLength


def cri_timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


def parse_cri_timestamp(text: str) -> datetime:
    seconds, _, fraction = text.rstrip("Z").partition(".")
    base = datetime.strptime(seconds, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    return base.replace(microsecond=int((fraction + "000000")[:6]))


class CriLogWriter:
    """Turns a container's stdout and stderr bytes into CRI log records in one file."""

    def __init__(self, path: Path, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        self.clock = clock
        self.pending: dict[str, bytes] = {"stdout": b"", "stderr": b""}

    def write(self, stream: str, data: bytes) -> None:
        buffer = self.pending[stream] + data
        records: list[bytes] = []
        stamp = cri_timestamp(self.clock()).encode()
        while True:
            newline = buffer.find(b"\n")
            if newline == -1:
                break
            line = buffer[:newline]
            while len(line) > MAX_LINE_BYTES:
                records.append(b"%s %s P %s\n" % (stamp, stream.encode(), line[:MAX_LINE_BYTES]))
                line = line[MAX_LINE_BYTES:]
            records.append(b"%s %s F %s\n" % (stamp, stream.encode(), line))
            buffer = buffer[newline + 1:]
        while len(buffer) > MAX_LINE_BYTES:
            records.append(b"%s %s P %s\n" % (stamp, stream.encode(), buffer[:MAX_LINE_BYTES]))
            buffer = buffer[MAX_LINE_BYTES:]
        self.pending[stream] = buffer
        if records:
            os.write(self.fd, b"".join(records))  # one write per chunk: readers never see half a record

    def close(self) -> None:
        """Ends the file; a last line without newline still counts as a full line, as in containerd."""
        stamp = cri_timestamp(self.clock()).encode()
        tail = b"".join(b"%s %s F %s\n" % (stamp, stream.encode(), rest)
                        for stream, rest in self.pending.items() if rest)
        if tail:
            os.write(self.fd, tail)
        os.close(self.fd)


@dataclass(frozen=True)
class LogRecord:
    timestamp: str
    stream: str
    partial: bool
    content: bytes

    @property
    def moment(self) -> datetime:
        return parse_cri_timestamp(self.timestamp)


def parse_record(line: bytes) -> LogRecord | None:
    parts = line.rstrip(b"\n").split(b" ", 3)
    if len(parts) < 3:
        return None
    content = parts[3] if len(parts) == 4 else b""
    return LogRecord(parts[0].decode(), parts[1].decode(), parts[2] == b"P", content)


@dataclass(frozen=True)
class LogOptions:
    tail_lines: int | None = None
    limit_bytes: int | None = None
    timestamps: bool = False
    since: datetime | None = None
    follow: bool = False


def render(record: LogRecord, timestamps: bool) -> bytes:
    prefix = record.timestamp.encode() + b" " if timestamps else b""
    return prefix + record.content + (b"" if record.partial else b"\n")


def _tail_offset(handle: BinaryIO, lines: int) -> int:
    """The offset where the last `lines` lines of the file start, found by reading backwards."""
    end = handle.seek(0, os.SEEK_END)
    if lines <= 0:
        return end
    position = end
    if end:
        handle.seek(end - 1)
        if handle.read(1) == b"\n":
            position = end - 1  # the newline that ends the file ends the last line: it starts none
    found = 0
    while position > 0:
        start = max(0, position - 64 * 1024)
        handle.seek(start)
        chunk = handle.read(position - start)
        index = len(chunk)
        while (index := chunk.rfind(b"\n", 0, index)) != -1:
            found += 1
            if found == lines:
                return start + index + 1
        position = start
    return 0


def read_log(
    path: Path, options: LogOptions, finished: Callable[[], bool] = lambda: True, poll_seconds: float = 0.1
) -> Iterator[bytes]:
    """The log as kubectl shows it. With `follow`, waits for more until `finished()` says the writer is done."""
    remaining = options.limit_bytes
    with path.open("rb") as handle:
        if options.tail_lines is not None:
            handle.seek(_tail_offset(handle, options.tail_lines))
        carry = b""
        while True:
            done = finished()  # read before the data: what was written before "finished" is then all there
            chunk = handle.read(64 * 1024)
            if chunk:
                lines = (carry + chunk).split(b"\n")
                carry = lines.pop()
                out: list[bytes] = []
                for line in lines:
                    record = parse_record(line)
                    if record is None or (options.since and record.moment < options.since):
                        continue
                    out.append(render(record, options.timestamps))
                data = b"".join(out)
                if remaining is not None:
                    data = data[:remaining]
                    remaining -= len(data)
                if data:
                    yield data
                if remaining == 0:
                    return
                continue
            if not options.follow or done:
                return
            time.sleep(poll_seconds)


def read_termination_file(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            return handle.read(TERMINATION_FILE_BYTES).decode("utf-8", "replace")
    except OSError:
        return ""


def log_tail_message(path: Path) -> str:
    """FallbackToLogsOnError: what the real kubelet reads, the first 2048 bytes of the last 80 lines."""
    if not path.exists():
        return ""
    options = LogOptions(tail_lines=TERMINATION_LOG_LINES, limit_bytes=TERMINATION_LOG_BYTES)
    return b"".join(read_log(path, options)).decode("utf-8", "replace")


def termination_message(
    policy: str, exit_code: int, message_file: Path, log_path: Path
) -> str:
    """state.terminated.message: the message file, or with FallbackToLogsOnError and a failure, the log's end."""
    message = read_termination_file(message_file)
    if not message and policy == "FallbackToLogsOnError" and exit_code != 0:
        message = log_tail_message(log_path)
    return message
