"""Render rows for the terminal: a table, CSV or stable JSON.

JSON (and CSV cells) hold only what JSON can: whatever a SQL result holds becomes JSON's own types, so
`--json` output always parses (`json.loads`, `jq`) and round-trips through other tools the same way:
dates, times and timestamps → ISO-8601 strings; intervals (`timedelta`) → ISO-8601 durations
(`P1DT2H30M`, `-PT1M30S`; DuckDB counts a month as 30 days); UUIDs and DECIMALs → strings (a decimal
keeps its digits: a float would round them); BLOBs (`bytes`) → base64 strings; NaN and ±infinity → null
(JSON has no such numbers); structs and maps → objects (keys as strings), lists and arrays → arrays,
converted all the way down; anything else → its `str()`. Duplicate column names (`SELECT 1 AS a, 2 AS a`)
become `a`, `a_1`, so no column is lost from a JSON object.
"""

import base64
import csv
import io
import json
import math
from datetime import date, datetime, time, timedelta
from decimal import Decimal

import numpy as np


def _plain(value):
    """`value` as JSON's types (see the module docstring), containers converted element by element."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (np.ndarray, np.generic)):
        return _plain(value.tolist())
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    return _text(value)


def _text(value) -> str | None:
    """A scalar JSON has no type for, as a string (a non-finite decimal as null, like a float's)."""
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return iso_duration(value)
    if isinstance(value, Decimal):
        return str(value) if value.is_finite() else None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    return str(value)  # a UUID, and whatever else a driver hands over


def iso_duration(delta: timedelta) -> str:
    """`delta` as an ISO-8601 duration: days, then hours, minutes and (fractional) seconds; a negative
    one with a leading `-` (`-PT1M30S`), zero as `PT0S`."""
    micros = abs(delta) // timedelta(microseconds=1)
    days, micros = divmod(micros, 86_400_000_000)
    hours, micros = divmod(micros, 3_600_000_000)
    minutes, micros = divmod(micros, 60_000_000)
    seconds = f"{micros / 1_000_000:.6f}".rstrip("0").rstrip(".")
    clock = "".join(f"{n}{unit}" for n, unit in ((hours, "H"), (minutes, "M")) if n)
    clock += f"{seconds}S" if micros else ""
    if not (days or clock):
        return "PT0S"
    text = "P" + (f"{days}D" if days else "") + (f"T{clock}" if clock else "")
    return ("-" if delta < timedelta(0) else "") + text


def unique_columns(columns: list[str]) -> list[str]:
    """`columns` with repeats renamed `a_1`, `a_2`, ... (skipping names the result has of its own)."""
    given, named = set(columns), []
    for column in columns:
        name, n = column, 0
        while name in named or (name != column and name in given):
            n += 1
            name = f"{column}_{n}"
        named.append(name)
    return named


def _cell(value, width: int = 60) -> str:
    if isinstance(value, (list, tuple, np.ndarray)) and len(value) > 4:
        shown = ", ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in list(value)[:3])
        return f"[{shown}, … ({len(value)})]"
    if isinstance(value, float):
        return f"{value:.4f}"
    text = "" if value is None else str(value).replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def _csv_cell(value):
    """A CSV cell: containers as their JSON text, scalars as JSON would hold them (null: empty)."""
    plain = _plain(value)
    return json.dumps(plain, ensure_ascii=False) if isinstance(plain, (list, dict)) else plain


def render(columns: list[str], rows: list[tuple], fmt: str = "table") -> str:
    columns = unique_columns(list(columns))
    if fmt == "json":
        records = [{c: _plain(v) for c, v in zip(columns, row)} for row in rows]
        return json.dumps(records, ensure_ascii=False, allow_nan=False)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(columns)
        writer.writerows([[_csv_cell(v) for v in row] for row in rows])
        return buffer.getvalue().rstrip("\n")
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths))
    rule = "  ".join("-" * w for w in widths)
    body = ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join([line, rule, *body, f"({len(rows)} row{'s' if len(rows) != 1 else ''})"])
