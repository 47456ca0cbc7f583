"""Read the rows of a json / jsonl / csv / parquet data file and check the text columns.

Plain `json` and `csv` (and pyarrow for parquet) instead of `datasets.load_dataset`: `import
datasets` alone costs seconds and its errors name neither the line nor the column. Every
problem names the file and the line or row, so a user can go straight to it.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from slmforge.data import chat_rows
from slmforge.errors import InvalidInput

FORMATS = ("json", "csv", "parquet")
_MAX_PROBLEMS = 20  # report this many bad rows at once, then stop reading
# a split and an optional slice of it, in Hugging Face's syntax: train, train[:4096], train[10%:], train[-128:]
SPLIT = re.compile(r"^(?P<name>[\w.-]+?)(?:\[(?P<start>-?\d+%?)?:(?P<stop>-?\d+%?)?\])?$")


@dataclass
class Rows:
    """The usable rows of one file (text columns only, all strings) and what was left out."""

    path: Path
    rows: list[dict[str, str]] = field(default_factory=list)
    empty: int = 0  # blank lines, `{}`, rows whose text columns are all empty
    read: int = 0  # records read, empty ones included


def read_rows(path: str | Path, data_format: str, text_cols: list[str], *, split: str = "train",
              max_samples: int | None = None, chat: bool = False) -> Rows:
    """All rows of `path` with `text_cols` as strings (with `chat`: a `messages` conversation each);
    any bad row is an InvalidInput naming it."""
    path = Path(path)
    check_format(path, data_format, chat)
    if not path.is_file():
        raise InvalidInput(f"data file not found: {path}")
    if chat:
        text_cols = [chat_rows.COLUMN]
    out = check_rows(Rows(path), ((path, where, r) for where, r in read_records(path, data_format, text_cols)),
                     text_cols, chat)
    out.rows = _apply_split(out.rows, split)
    return limit_rows(out, max_samples)


def check_format(path: Path, data_format: str, chat: bool) -> None:
    if data_format not in FORMATS:
        raise InvalidInput(f"data_format '{data_format}' is not one of {', '.join(FORMATS)}")
    if chat and data_format == "csv":
        raise InvalidInput(f"{path}: chat rows need JSON lines or parquet; CSV cannot hold a list of messages")


def read_records(path: Path, data_format: str, columns: list[str]) -> Iterator[tuple[str, Any]]:
    """(where, record) of each record of `path`: every column of a JSON record, `columns` of CSV and
    parquet (whose header or schema must hold them)."""
    return {"json": _json_records, "csv": _csv_records, "parquet": _parquet_records}[data_format](path, columns)


def check_rows(out: Rows, records: Iterable[tuple[Path, str, Any]], text_cols: list[str], chat: bool) -> Rows:
    """Count `(path, where, record)` into `out`: usable rows kept, empty ones counted, bad ones an
    InvalidInput naming the first (up to _MAX_PROBLEMS distinct ones listed; rows with the same problem
    as an earlier one are counted on its line, not listed)."""
    first: dict[str, str] = {}  # problem -> where it was first seen (insertion order: file order)
    count: dict[str, int] = {}
    for path, where, record in records:
        out.read += 1
        row, problem = _check_chat_record(record) if chat else _check_record(record, text_cols)
        if problem is not None:
            first.setdefault(problem, f"{path}: {where}")
            count[problem] = count.get(problem, 0) + 1
            if len(first) >= _MAX_PROBLEMS:
                break
        elif row is None:
            out.empty += 1
        else:
            out.rows.append(row)
    if first:
        problems = [f"{where}: {problem}{_alike(count[problem] - 1)}" for problem, where in first.items()]
        raise InvalidInput(problems[0], problems)
    return out


def _alike(more: int) -> str:
    return f" (and {more} more row{'s' if more > 1 else ''} alike)" if more else ""


def limit_rows(out: Rows, max_samples: int | None) -> Rows:
    """The first `max_samples` rows; none left is an InvalidInput."""
    if max_samples is not None:
        if max_samples < 1:
            raise InvalidInput(f"max_samples must be at least 1, got {max_samples}")
        out.rows = out.rows[:max_samples]
    if not out.rows:
        raise InvalidInput(f"{out.path}: no usable rows ({out.read} read, {out.empty} empty)")
    return out


def _check_record(record: Any, text_cols: list[str]) -> tuple[dict[str, str] | None, str | None]:
    """(row, None) for a good row, (None, None) for an empty one, (None, problem) for a bad one."""
    if record is None or record == {}:
        return None, None
    if not isinstance(record, dict):
        return None, f"expected an object with columns {', '.join(text_cols)}, got {_kind(record)}"
    missing = [c for c in text_cols if c not in record]
    if missing:
        have = ", ".join(str(k) for k in record) or "none"
        return None, f"missing column '{missing[0]}' (columns: {have})"
    values = {c: record[c] for c in text_cols}
    if all(v is None or (isinstance(v, str) and not v.strip()) for v in values.values()):
        return None, None
    for c, v in values.items():
        if not isinstance(v, str):
            shown = "" if v is None else f" ({json.dumps(v, default=str)[:40]})"
            return None, f"column '{c}' is {_kind(v)}{shown}, expected a string"
    return values, None


def _check_chat_record(record: Any) -> tuple[dict | None, str | None]:
    if record is None or record == {}:
        return None, None
    if not isinstance(record, dict) or chat_rows.COLUMN not in record:
        return None, f"expected an object with '{chat_rows.COLUMN}' (a chat row), got {_kind(record)}"
    messages = record[chat_rows.COLUMN]
    if hasattr(messages, "tolist"):  # parquet gives numpy arrays of dicts
        messages = messages.tolist()
    problem = chat_rows.check_conversation(messages)
    return (None, problem) if problem else ({chat_rows.COLUMN: messages}, None)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", list: "a list", dict: "an object"}.get(
        type(value), type(value).__name__)


def _json_records(path: Path, text_cols: list[str]) -> Iterator[tuple[str, Any]]:
    """JSON lines, or one top-level JSON array of objects (what `datasets` "json" also reads)."""
    text = read_text(path)
    if text.lstrip().startswith("["):
        try:
            array, end = json.JSONDecoder().raw_decode(text.lstrip())
        except json.JSONDecodeError as e:
            skipped = text[: len(text) - len(text.lstrip())].count("\n")
            raise InvalidInput(f"{path}: line {e.lineno + skipped}: not valid JSON ({e.msg}, "
                               f"column {e.colno})") from None
        if not text.lstrip()[end:].strip():  # one array holds every row
            for i, record in enumerate(array, 1):
                yield f"row {i}", record
            return
        # else JSON lines whose first line happens to be an array
    decoder = json.JSONDecoder()
    row = 0
    # split on "\n" only: JSON strings may hold U+2028 and friends, which splitlines() would cut at
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # the file's final newline ends the last line; it starts no new one
    for lineno, line in enumerate(lines, 1):
        line = line.rstrip("\r")
        if not line.strip():
            yield f"line {lineno}", None  # a blank line: counted as empty
            continue
        try:
            record, end = decoder.raw_decode(line.strip())
            if end != len(line.strip()):
                raise json.JSONDecodeError("extra data after the value", line.strip(), end)
        except json.JSONDecodeError as e:
            raise InvalidInput(f"{path}: line {lineno}: not valid JSON ({e.msg}, column {e.colno})") from None
        row += 1
        yield f"row {row} (line {lineno})", record


def _csv_records(path: Path, text_cols: list[str]) -> Iterator[tuple[str, Any]]:
    text = read_text(path)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            return
        missing = [c for c in text_cols if c not in header]
        if missing:
            raise InvalidInput(f"{path}: line 1: the header has no column '{missing[0]}' "
                               f"(columns: {', '.join(header)})")
        row = 0
        for fields in reader:
            row += 1
            where = f"row {row} (line {reader.line_num})"
            if not fields or all(not f.strip() for f in fields):
                yield where, None
            elif len(fields) != len(header):
                raise InvalidInput(f"{path}: {where}: {len(fields)} fields, the header has {len(header)}")
            else:
                yield where, dict(zip(header, fields))
    except csv.Error as e:
        raise InvalidInput(f"{path}: line {reader.line_num}: not valid CSV ({e})") from None


def read_parquet(path: Path, *, schema_only: bool = False, columns: list[str] | None = None):
    """The parquet table (or only its schema, or only `columns`); a file pyarrow can't read is one line naming it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_schema(path) if schema_only else pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as e:
        raise InvalidInput(f"{path}: not a readable parquet file ({e})") from None


def _parquet_records(path: Path, text_cols: list[str]) -> Iterator[tuple[str, Any]]:
    names = read_parquet(path, schema_only=True).names
    missing = [c for c in text_cols if c not in names]
    if missing:
        raise InvalidInput(f"{path}: no column '{missing[0]}' (columns: {', '.join(names)})")
    table = read_parquet(path, columns=list(dict.fromkeys(text_cols)))  # a hub file may hold many more columns
    columns = {c: table.column(c).to_pylist() for c in text_cols}
    for i in range(table.num_rows):
        yield f"row {i + 1}", {c: columns[c][i] for c in text_cols}


def read_text(path: Path) -> str:
    """The file as UTF-8 (a BOM is dropped); other encodings are one line naming the first bad line."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise InvalidInput(f"{path}: line {line}: not UTF-8 text ({e.reason})") from None


def _apply_split(rows: list, split: str) -> list:
    """`train` (a data file has only that split) or a slice of it: `train[:80%]`, `train[100:]`."""
    m = SPLIT.match(split.replace(" ", ""))
    if not m or m["name"] != "train":
        raise InvalidInput(f"split '{split}': a data file has only the split 'train' "
                           "(or a slice of it such as 'train[:80%]' or 'train[100:]')")
    return slice_rows(rows, m["start"], m["stop"])


def slice_rows(rows: list, start: str | None, stop: str | None) -> list:
    """`rows[start:stop]` with Hugging Face's slice bounds: a row index, or a percentage (`10%`) of the rows."""

    def bound(text: str | None, default: int) -> int:
        if text is None:
            return default
        if text.endswith("%"):
            return round(len(rows) * int(text[:-1]) / 100)
        return int(text)

    return rows[bound(start, 0):bound(stop, len(rows))]
