"""`--json` and CSV output of whatever a SQL result holds: valid JSON, no column lost."""

import json
from datetime import timedelta

import duckdb
import pytest

from embedline.flows.output import render


def _result(sql: str) -> tuple[list[str], list[tuple]]:
    relation = duckdb.sql(sql)
    return relation.columns, relation.fetchall()


def test_json_holds_times_intervals_uuids_blobs_decimals_and_non_finite_floats():
    columns, rows = _result(
        "SELECT TIME '12:00:00' AS t, INTERVAL '1 day 2 hours' AS i, 'nan'::DOUBLE AS n, "
        "'-inf'::DOUBLE AS ninf, '3e5d2b68-5d3c-4d3b-9a8e-1f2a3b4c5d6e'::UUID AS u, 'x'::BLOB AS b, "
        "1.50::DECIMAL(4,2) AS d, DATE '2024-02-29' AS day"
    )
    (record,) = json.loads(render(columns, rows, "json"))
    assert record == {"t": "12:00:00", "i": "P1DT2H", "n": None, "ninf": None,
                      "u": "3e5d2b68-5d3c-4d3b-9a8e-1f2a3b4c5d6e", "b": "eA==", "d": "1.50",
                      "day": "2024-02-29"}


def test_json_converts_inside_structs_maps_and_lists():
    columns, rows = _result(
        "SELECT {'at': [TIME '01:02:03', NULL], 'score': 'inf'::FLOAT} AS s, "
        "MAP {1: INTERVAL 90 SECOND} AS m, ['nan'::DOUBLE, 0.5] AS l"
    )
    (record,) = json.loads(render(columns, rows, "json"))
    assert record == {"s": {"at": ["01:02:03", None], "score": None}, "m": {"1": "PT1M30S"}, "l": [None, 0.5]}


def test_duplicate_column_names_are_kept_apart():
    columns, rows = _result("SELECT 1 AS a, 2 AS a, 3 AS a_1, 4 AS a")
    assert json.loads(render(columns, rows, "json")) == [{"a": 1, "a_2": 2, "a_1": 3, "a_3": 4}]
    assert render(columns, rows, "csv").splitlines()[0] == "a,a_2,a_1,a_3"


def test_csv_cells_use_the_same_conversions():
    columns, rows = _result("SELECT {'x': TIME '01:00:00'} AS s, 'nan'::DOUBLE AS n, 'x'::BLOB AS b")
    assert render(columns, rows, "csv").splitlines()[1] == '"{""x"": ""01:00:00""}",,eA=='


@pytest.mark.parametrize("delta, text", [
    (timedelta(0), "PT0S"),
    (timedelta(days=32, hours=3, seconds=0.5), "P32DT3H0.5S"),
    (timedelta(seconds=-90), "-PT1M30S"),
    (timedelta(minutes=5), "PT5M"),
])
def test_intervals_are_iso_8601_durations(delta, text):
    from embedline.flows.output import iso_duration

    assert iso_duration(delta) == text
