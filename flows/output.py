"""Render rows for the terminal: a table, CSV or stable JSON."""

import csv
import io
import json
from datetime import date, datetime
from decimal import Decimal

import numpy as np


def _plain(value):
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _cell(value, width: int = 60) -> str:
    if isinstance(value, (list, tuple, np.ndarray)) and len(value) > 4:
        shown = ", ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in list(value)[:3])
        return f"[{shown}, … ({len(value)})]"
    if isinstance(value, float):
        return f"{value:.4f}"
    text = "" if value is None else str(value).replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def render(columns: list[str], rows: list[tuple], fmt: str = "table") -> str:
    if fmt == "json":
        return json.dumps([{c: _plain(v) for c, v in zip(columns, row)} for row in rows], ensure_ascii=False)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(columns)
        writer.writerows([[json.dumps(_plain(v)) if isinstance(v, (list, tuple, np.ndarray)) else _plain(v)
                           for v in row] for row in rows])
        return buffer.getvalue().rstrip("\n")
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths))
    rule = "  ".join("-" * w for w in widths)
    body = ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join([line, rule, *body, f"({len(rows)} row{'s' if len(rows) != 1 else ''})"])
