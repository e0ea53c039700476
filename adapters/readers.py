"""Readers for every container of SEMANTICS §1, detected from the content, not the name.

Single activity object, JSON array, NDJSON, a Voucherify list response, a webhook
delivery (v2024-01-01 envelope). They stream: NDJSON is read a line at a time and a JSON
array an element at a time, so a file of any size never sits in memory. A bad record
yields a `BadRecord` naming the source, the location and the field; the records around it
still come through."""

from __future__ import annotations

import codecs
import gzip
import io
import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from custate.domain import Activity, ActivityError, parse_activity
from custate.domain.activity import check_data
from custate.domain.errors import Error
from custate.domain.payload import oversized_key

MAX_RECORD_BYTES = 16 * 1024 * 1024
"""A record (an NDJSON line, an array element) longer than this is rejected unread:
no activity is anywhere near it, and holding it would let one bad line exhaust memory."""

RAW_KEEP_BYTES = 64 * 1024
"""How much of an oversized record's text is kept with its rejection."""

_CHUNK = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True, slots=True)
class Record:
    source: str
    location: str
    activity: Activity


@dataclass(frozen=True, slots=True)
class BadRecord:
    source: str
    location: str
    field: str
    message: str
    raw: str

    def __str__(self) -> str:
        return f"{self.source} {self.location}: {self.field}: {self.message}"


Item = Record | BadRecord


class SourceError(Error, OSError):
    """A source that cannot be read at all (missing, unreadable, a directory)."""


def read_paths(paths: Iterable[str], customer_id: str | None = None) -> Iterator[Item]:
    """Records from each path in turn; `-` is standard input."""
    for path in paths:
        yield from read_path(path, customer_id)


def read_path(path: str, customer_id: str | None = None) -> Iterator[Item]:
    if path == "-":
        yield from read_stream(sys.stdin.buffer, "<stdin>", customer_id)
        return
    p = Path(path)
    try:
        f = p.open("rb")
    except OSError as e:
        raise SourceError(f"{path}: cannot read: {e.strerror or e}") from e
    with f:
        if p.is_dir():
            raise SourceError(f"{path}: is a directory")
        if f.peek(2)[:2] == GZIP_MAGIC:
            with gzip.GzipFile(fileobj=f) as g:
                yield from read_stream(io.BufferedReader(g), path, customer_id)
            return
        yield from read_stream(f, path, customer_id)


def check_readable(paths: Iterable[str]) -> None:
    """Fail before any work when a named file cannot be opened."""
    for path in paths:
        if path == "-":
            continue
        p = Path(path)
        if not p.exists():
            raise SourceError(f"{path}: no such file")
        if p.is_dir():
            raise SourceError(f"{path}: is a directory")
        try:
            p.open("rb").close()
        except OSError as e:
            raise SourceError(f"{path}: cannot read: {e.strerror or e}") from e


def read_text(
    text: str | bytes, source: str = "<text>", customer_id: str | None = None
) -> Iterator[Item]:
    data = text.encode() if isinstance(text, str) else text
    return read_stream(io.BytesIO(data), source, customer_id)


def read_stream(f: IO[bytes], source: str, customer_id: str | None = None) -> Iterator[Item]:
    first = _peek_nonspace(f)
    if first == b"":
        return
    if first == b"[":
        yield from _read_array(f, source, customer_id)
        return
    yield from _read_lines_or_document(f, source, customer_id)


def records_from_value(
    value: object, source: str, location: str, customer_id: str | None = None, raw: str = ""
) -> Iterator[Item]:
    """Any container that is already parsed: list response, envelope, array or activity."""
    if isinstance(value, list):
        for i, item in enumerate(value):
            yield from records_from_value(item, source, _join(location, f"[{i}]"), customer_id)
        return
    if isinstance(value, dict):
        if value.get("object") == "list":
            ref = value.get("data_ref", "data")
            items = value.get(ref) if isinstance(ref, str) else None
            if isinstance(items, list):
                for i, item in enumerate(items):
                    yield from records_from_value(
                        item, source, _join(location, f"{ref}[{i}]"), customer_id
                    )
                return
        envelope = _envelope_activity(value)
        if envelope is not None:
            record, entity = envelope
            yield _one(record, source, location, entity or customer_id, raw)
            return
    yield _one(value, source, location, customer_id, raw)


def _one(value: object, source: str, location: str, customer_id: str | None, raw: str) -> Item:
    """One record validated: a valid activity whose payload every backend stores exactly."""
    try:
        activity = parse_activity(value, customer_id)
        nested = isinstance(value, dict) and value.get("data") is not activity.data
        prefix = "data.data" if nested else "data"
        check_data(activity.data, prefix)
        key = oversized_key(activity.payload)
        if key is not None:
            raise ActivityError(f"{prefix}.{key[0]}", key[1])
        return Record(source, location, activity)
    except ActivityError as e:
        return BadRecord(source, location, e.field, e.message, raw or _dump(value))


def _envelope_activity(value: dict[str, Any]) -> tuple[dict[str, Any], str | None] | None:
    """A v2024-01-01 webhook delivery: `event` describes the activity, `data` is its payload."""
    event = value.get("event")
    if not isinstance(event, dict) or "data" not in value:
        return None
    if "project_id" not in value and "source" not in value:
        return None
    record: dict[str, Any] = {
        "id": event.get("id"),
        "type": event.get("type"),
        "created_at": event.get("created_at"),
        "data": value.get("data"),
    }
    if event.get("group_id") is not None:
        record["group_id"] = event["group_id"]
    entity = event.get("entity_id")
    return record, entity if isinstance(entity, str) and entity else None


def _join(location: str, part: str) -> str:
    return f"{location} {part}" if location else part


def _dump(value: object) -> str:
    """A record as the text kept with its rejection (best effort for what is not JSON)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        pass
    try:
        return json.dumps(value, default=repr)
    except (ValueError, TypeError, RecursionError):
        return f"<a {type(value).__name__} that cannot be written as JSON>"


def _peek_nonspace(f: IO[bytes]) -> bytes:
    """The first non-blank byte, without consuming it. Works on unseekable stdin."""
    peekable = f if hasattr(f, "peek") else None
    if peekable is not None:
        while True:
            head: bytes = peekable.peek(1)
            if not head:
                return b""
            stripped = head.lstrip()
            if stripped:
                return stripped[:1]
            # consume the blanks we saw, keep looking
            f.read(len(head) - len(stripped))
    pos = f.tell()
    while True:
        b = f.read(1)
        if not b:
            return b""
        if not b.isspace():
            f.seek(pos)
            return b
        pos += 1


def _read_lines_or_document(f: IO[bytes], source: str, customer_id: str | None) -> Iterator[Item]:
    """NDJSON when the first line is a whole JSON value, else one (pretty-printed) document.
    A line or a document over `MAX_RECORD_BYTES` is rejected unparsed, read no further than
    the limit (the rest is skipped in chunks): memory stays bounded whatever the input."""
    first = f.readline(MAX_RECORD_BYTES + 1)
    if _oversized(first):
        yield _too_big(source, "line 1", len(first) + _skip_line(f), first)
        line = f.readline(MAX_RECORD_BYTES + 1)
        if line:
            yield from _ndjson(f, line, source, customer_id, start_line=2)
        return
    if _is_complete_json(first):
        yield from _ndjson(f, first, source, customer_id)
        return
    second = f.readline(MAX_RECORD_BYTES + 1)
    if second.strip() and _is_complete_json(second) and second.lstrip()[:1] == b"{":
        # The first line is broken, but the second is a whole object: NDJSON.
        yield BadRecord(source, "line 1", "<json>", _json_error(first), _keep(first))
        yield from _ndjson(f, second, source, customer_id, start_line=2)
        return
    rest = first + second
    rest += f.read(max(0, MAX_RECORD_BYTES + 1 - len(rest)))
    if len(rest) > MAX_RECORD_BYTES:
        yield _too_big(source, "document", len(rest) + _skip_all(f), rest)
        return
    try:
        value = orjson.loads(rest)
    except orjson.JSONDecodeError as e:
        yield BadRecord(source, "document", "<json>", f"malformed JSON: {e}", _keep(rest))
        return
    yield from records_from_value(
        value, source, "", customer_id, raw=rest.decode("utf-8", "replace")
    )


def _oversized(line: bytes) -> bool:
    """A line `readline(MAX_RECORD_BYTES + 1)` cut short: longer than a record may be."""
    return len(line) > MAX_RECORD_BYTES and not line.endswith(b"\n")


def _too_big(source: str, location: str, size: int, head: bytes) -> BadRecord:
    limit = MAX_RECORD_BYTES // (1024 * 1024)
    return BadRecord(
        source,
        location,
        "<record>",
        f"record is {size / 1e6:.1f} MB, over the {limit} MiB limit",
        _keep(head),
    )


def _skip_all(f: IO[bytes]) -> int:
    skipped = 0
    while chunk := f.read(_CHUNK):
        skipped += len(chunk)
    return skipped


def _is_complete_json(line: bytes) -> bool:
    if not line.strip() or len(line) > MAX_RECORD_BYTES:
        return False
    try:
        orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    return True


def _ndjson(
    f: IO[bytes], first: bytes, source: str, customer_id: str | None, start_line: int = 1
) -> Iterator[Item]:
    for line in _lines(f, first, source, start_line):
        if isinstance(line, BadRecord):
            yield line
        else:
            yield from line_items(line[1], source, line[0], customer_id)


Line = tuple[str, bytes]  # location, text


def _lines(f: IO[bytes], first: bytes, source: str, start_line: int) -> Iterator[Line | BadRecord]:
    """NDJSON lines with their locations, unparsed; an oversized line is skipped unread."""
    line_no = start_line
    line: bytes = first
    while line:
        location = f"line {line_no}"
        if _oversized(line):
            yield _too_big(source, location, len(line) + _skip_line(f), line)
        elif line.strip():
            yield location, line
        line_no += 1
        line = f.readline(MAX_RECORD_BYTES + 1)


def line_items(
    line: bytes, source: str, location: str, customer_id: str | None = None
) -> Iterator[Item]:
    """The records of one NDJSON line (a line may hold any container)."""
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        yield BadRecord(source, location, "<json>", _json_error(line), _keep(line))
        return
    yield from records_from_value(
        value, source, location, customer_id, raw=line.decode("utf-8", "replace").rstrip("\n")
    )


def ndjson_chunks(path: str, lines: int = 1000) -> Iterator[list[Line | BadRecord]] | None:
    """A plain NDJSON file's lines in chunks, unparsed, for parsing elsewhere (another
    process); None for anything else (stdin, gzip, an array, one document), which
    `read_path` reads as usual."""
    if path == "-":
        return None
    try:
        f = Path(path).open("rb")  # noqa: SIM115  (the generator below owns it)
    except OSError as e:
        raise SourceError(f"{path}: cannot read: {e.strerror or e}") from e
    if f.peek(2)[:2] == GZIP_MAGIC or _peek_nonspace(f) in (b"[", b""):
        f.close()
        return None
    first = f.readline(MAX_RECORD_BYTES + 1)
    if not _is_complete_json(first):
        f.close()
        return None

    def chunks() -> Iterator[list[Line | BadRecord]]:
        with f:
            chunk: list[Line | BadRecord] = []
            for line in _lines(f, first, path, 1):
                chunk.append(line)
                if len(chunk) >= lines:
                    yield chunk
                    chunk = []
            if chunk:
                yield chunk

    return chunks()


def _skip_line(f: IO[bytes]) -> int:
    skipped = 0
    while True:
        chunk = f.readline(_CHUNK)
        skipped += len(chunk)
        if not chunk or chunk.endswith(b"\n"):
            return skipped


def _json_error(text: bytes) -> str:
    try:
        json.loads(text)
    except json.JSONDecodeError as e:
        return f"malformed JSON: {e.msg} at column {e.colno}"
    except UnicodeDecodeError as e:
        return f"not UTF-8: {e.reason} at byte {e.start}"
    return "malformed JSON"


def _keep(text: bytes) -> str:
    return text[:RAW_KEEP_BYTES].decode("utf-8", "replace").rstrip("\n")


def _no_constant(name: str) -> Any:
    """NaN and Infinity are not JSON (orjson refuses them too)."""
    raise ValueError(f"{name} is not a JSON value")


def _read_array(f: IO[bytes], source: str, customer_id: str | None) -> Iterator[Item]:
    """A top-level JSON array, one element at a time, with a bounded buffer."""
    decoder = json.JSONDecoder(parse_constant=_no_constant)
    utf8 = codecs.getincrementaldecoder("utf-8")("replace")
    buf = ""
    pos = 0
    eof = False
    index = 0

    def refill() -> bool:
        nonlocal buf, pos, eof
        chunk = f.read(_CHUNK)
        if not chunk:
            eof = True
            return False
        buf = buf[pos:] + utf8.decode(chunk)
        pos = 0
        return True

    def skip_ws() -> bool:
        nonlocal pos
        while True:
            while pos < len(buf) and buf[pos] in " \t\r\n":
                pos += 1
            if pos < len(buf):
                return True
            if not refill():
                return False

    skip_ws()
    pos += 1  # the "["
    while True:
        if not skip_ws():
            yield BadRecord(
                source, f"[{index}]", "<json>", "unexpected end of file: array not closed", ""
            )
            return
        if buf[pos] == "]":
            return
        if index > 0:
            if buf[pos] != ",":
                yield BadRecord(
                    source,
                    f"[{index}]",
                    "<json>",
                    f"expected ',' or ']', found {buf[pos]!r}",
                    buf[pos : pos + 200],
                )
                return
            pos += 1
            if not skip_ws():
                continue
        while True:
            try:
                value, end = decoder.raw_decode(buf, pos)
            except json.JSONDecodeError as e:
                if len(buf) - pos > MAX_RECORD_BYTES:
                    yield BadRecord(
                        source,
                        f"[{index}]",
                        "<record>",
                        "element over the record size limit, or malformed",
                        buf[pos : pos + RAW_KEEP_BYTES],
                    )
                    return
                if refill():
                    continue
                yield BadRecord(
                    source,
                    f"[{index}]",
                    "<json>",
                    f"malformed JSON: {e.msg}",
                    buf[pos : pos + RAW_KEEP_BYTES],
                )
                return
            except (ValueError, RecursionError) as e:  # NaN, 4,300 digits, 1,000 levels
                message = str(e) if isinstance(e, ValueError) else "nested too deeply"
                yield BadRecord(
                    source,
                    f"[{index}]",
                    "<json>",
                    f"malformed JSON: {message}",
                    buf[pos : pos + RAW_KEEP_BYTES],
                )
                return
            if end == len(buf) and not eof and refill():
                continue  # a number or literal cut by the buffer edge: read on and decode again
            break
        raw = buf[pos:end]
        pos = end
        yield from records_from_value(value, source, f"[{index}]", customer_id, raw=raw)
        index += 1
        if pos > _CHUNK:
            buf = buf[pos:]
            pos = 0
