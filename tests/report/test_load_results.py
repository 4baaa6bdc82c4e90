"""load_results: a results.json is read whole, and every unreadable one is named with its fix."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from stealkit.errors import StealkitError
from stealkit.report import load_results

RESULTS = {"name": "default", "runs": [{"attack": "knockoff", "status": "ok"}], "complete": True}


def test_reads_a_results_file(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text(json.dumps(RESULTS), encoding="utf-8")
    assert load_results(path) == RESULTS


def test_missing_file_says_which_file_to_give(tmp_path: Path) -> None:
    with pytest.raises(StealkitError, match=r"nope\.json does not exist; give the results\.json"):
        load_results(tmp_path / "nope.json")


def test_directory_points_at_the_results_file_inside(tmp_path: Path) -> None:
    with pytest.raises(StealkitError, match="is a directory.*of a run inside it"):
        load_results(tmp_path)
    (tmp_path / "results.json").write_text(json.dumps(RESULTS), encoding="utf-8")
    with pytest.raises(
        StealkitError, match="is a directory.*give " + re.escape(str(tmp_path / "results.json"))
    ):
        load_results(tmp_path)


@pytest.mark.parametrize(
    "content",
    [json.dumps(RESULTS)[:-9].encode(), b"", b"\xff\xfe\x00garbage\x80"],
    ids=["truncated", "empty", "binary"],
)
def test_invalid_json_names_the_cause_and_the_rebuild(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "results.json"
    path.write_bytes(content)
    with pytest.raises(StealkitError) as caught:
        load_results(path)
    message = str(caught.value)
    assert message.startswith(f"{path} is not valid JSON (truncated? it is rewritten atomically")
    assert "so a truncated file was cut by something else): " in message
    assert message.endswith("; re-run `stealkit run` with the same config to rebuild it")
    assert isinstance(caught.value.__cause__, ValueError)  # the JSON error is kept as the cause


def test_truncated_json_message_carries_the_parser_position(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text('{"runs": [{"attack": "kn', encoding="utf-8")
    with pytest.raises(StealkitError, match=r"Unterminated string .*line 1 column \d+"):
        load_results(path)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ([RESULTS], "holds a JSON array at the top level"),
        ("runs", "holds a JSON string at the top level"),
        (3, "holds a JSON number at the top level"),
        (None, "holds a JSON null at the top level"),
        ({"name": "x", "victim": {}}, r"has no \"runs\" list \(its keys are 'name', 'victim'\)"),
        ({"runs": "all of them"}, r"has no \"runs\" list \(its \"runs\" is a JSON string\)"),
        ({"runs": {"0": {}}}, r"has no \"runs\" list \(its \"runs\" is a JSON object\)"),
    ],
)
def test_json_that_is_not_results_is_refused(tmp_path: Path, value: object, says: str) -> None:
    path = tmp_path / "results.json"
    path.write_text(json.dumps(value), encoding="utf-8")
    with pytest.raises(StealkitError, match=says):
        load_results(path)
