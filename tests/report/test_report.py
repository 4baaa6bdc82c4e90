"""The HTML and Markdown report: content, escaping, empty and old results."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from stealkit.report import render_html, render_markdown, write_report

ATTACKS = ("knockoff-random", "copycat")
DEFENSES = ("none", "top1")
BUDGETS = (1000, 5000)
SEEDS = (0, 1)
ERROR = "CUDA out of memory <script>alert('x')</script> & more"


def _agreement(attack: str, defense: str, budget: int, seed: int) -> float:
    base = {"knockoff-random": 0.80, "copycat": 0.68}[attack] - {"none": 0.0, "top1": 0.1}[defense]
    return round(base + (0.05 if budget == 5000 else 0.0) + 0.01 * seed, 4)


def _run(attack: str, defense: str, budget: int, seed: int) -> dict[str, Any]:
    agreement = _agreement(attack, defense, budget, seed)
    return {
        "attack": attack,
        "defense": defense,
        "budget": budget,
        "seed": seed,
        "status": "ok",
        "error": None,
        "attack_repr": f"{attack}(lr=0.001, epochs=30)",
        "defense_repr": {"none": "NoDefense()", "top1": "TopK(k=1)"}[defense],
        "surrogate": "cnn3",
        "metrics": {
            "agreement": agreement,
            "accuracy": agreement - 0.01,
            "victim_accuracy": 0.997,
            "relative_accuracy": (agreement - 0.01) / 0.997,
        },
        "ledger": {
            "budget": budget,
            "spent": budget,
            "cost": budget / 1000,
            "price_per_1k": 1.0,
            "calls": budget // 64 + 1,
            "refused_calls": 0,
            "refused_queries": 0,
        },
        "wall_seconds": 1.5,
        "config": {},
    }


def _results() -> dict[str, Any]:
    runs = [_run(a, d, b, s) for a in ATTACKS for d in DEFENSES for b in BUDGETS for s in SEEDS]
    runs.append(
        {
            "attack": "copycat",
            "defense": "none",
            "budget": 20000,
            "seed": 0,
            "status": "failed",
            "error": ERROR,
            "metrics": None,
            "wall_seconds": 0.2,
        }
    )
    return {
        "name": "default",
        "created": "2026-11-23T18:00:00",
        "stealkit_version": "0.1.0",
        "victim": {
            "name": "digit-recognizer",
            "repr": "DigitRecognizer(width=32)",
            "test_accuracy": 0.997,
            "eval_set": "mnist-5k:all",
            "pool": "fashion-mnist:train",
        },
        "defenses": [
            {
                "name": "none",
                "repr": "NoDefense()",
                "victim_accuracy": 0.997,
                "utility_drop": 0.0,
                "top1_kept": 1.0,
                "mean_l1_change": 0.0,
            },
            {
                "name": "top1",
                "repr": "TopK(k=1)",
                "victim_accuracy": 0.997,
                "utility_drop": 0.0,
                "top1_kept": 1.0,
                "mean_l1_change": 0.012,
            },
        ],
        "runs": runs,
        "config": {"name": "default", "grid": {"attacks": list(ATTACKS), "budgets": [1000, 5000]}},
    }


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("report") / "nested" / "report.html"
    assert write_report(_results(), path) == path
    assert path.is_file()
    return path.read_text(encoding="utf-8")


def test_report_names_every_attack_and_defense(page: str) -> None:
    for name in ATTACKS + DEFENSES + ("digit-recognizer", "mnist-5k:all", "fashion-mnist:train"):
        assert name in page


def test_report_embeds_png_plots_and_no_external_assets(page: str) -> None:
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) >= 2
    for image in images:
        assert base64.b64decode(image).startswith(b"\x89PNG\r\n\x1a\n")
    assert "http://" not in page and "https://" not in page
    assert "<link" not in page and "<script" not in page


def test_failed_run_error_is_escaped(page: str) -> None:
    assert html.escape(ERROR) in page
    assert "<script>alert" not in page


def test_report_totals_and_seed_means(page: str) -> None:
    # 16 ok runs: 8 of 1,000 queries and 8 of 5,000 at 1.0 per 1,000 -> 48,000 queries, 48.00.
    assert "48,000" in page and "48.00" in page
    # knockoff-random / none / 1,000 over seeds 0 and 1: agreement 0.80 and 0.81.
    assert "0.805 ± 0.007" in page


def test_summary_rows_are_sorted(page: str) -> None:
    runs = page.split('id="runs"')[1].split("</table>")[0]
    cells = re.findall(r"<tr><td>([^<]*)</td><td>([^<]*)</td><td[^>]*>([^<]*)</td>", runs)
    keys = [(a, d, int(b.replace(",", ""))) for a, d, b in cells]
    assert len(keys) == 16 and keys == sorted(keys)


def test_config_is_yaml_in_details(page: str) -> None:
    block = re.search(r'<details>.*?<pre class="config">(.*?)</pre></details>', page, re.S)
    assert block is not None
    assert yaml.safe_load(html.unescape(block.group(1))) == _results()["config"]


@pytest.mark.parametrize(
    "results",
    [
        {},
        {"name": "empty", "victim": {}, "defenses": [], "runs": [], "config": {}},
        {"runs": [{"attack": "a", "status": "failed", "error": "boom"}]},
    ],
)
def test_empty_results_still_render(results: dict[str, Any], tmp_path: Path) -> None:
    text = write_report(results, tmp_path / "r.html").read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert "No successful runs" in text
    assert "# stealkit report" in render_markdown(results)


def test_old_results_missing_keys_show_a_dash() -> None:
    old = {
        "runs": [
            {"attack": "knockoff", "defense": "none", "budget": 100, "metrics": {"agreement": 0.5}}
        ],
        "defenses": [{"name": "none"}],
    }
    page = render_html(old)
    assert "knockoff" in page and "0.500" in page and "—" in page
    # One run is one number (no figure), and one defence has no trade-off to draw.
    assert page.count("data:image/png;base64,") == 0 and "One run is one number" in page


def test_markdown_has_a_row_per_attack_defense_budget() -> None:
    text = render_markdown(_results())
    rows = {
        tuple(c.strip() for c in line.strip("|").split("|")[:3])
        for line in text.splitlines()
        if line.startswith("| ")
    }
    for attack in ATTACKS:
        for defense in DEFENSES:
            for budget in BUDGETS:
                assert (attack, defense, f"{budget:,}") in rows
    assert "data:image" not in text
    assert "\\|" not in text.split("## Failed runs")[0]  # no stray escaped pipes in the tables
    assert "CUDA out of memory" in text.split("## Failed runs")[1]


def test_markdown_keeps_text_from_results_inert() -> None:
    results = _results()
    results["runs"][0]["attack"] = "<b>bold</b>"
    text = render_markdown(results)
    assert "<b>" not in text and "&lt;b&gt;bold&lt;/b&gt;" in text
    assert "`CUDA out of memory <script>alert('x')</script> & more`" in text  # inside a code span


def test_runner_shaped_results_derive_utility_drop_and_show_total_time() -> None:
    results = _results()
    results["wall_seconds"] = 3725.0
    results["victim"]["eval_size"] = 5000
    for d in results["defenses"]:
        del d["utility_drop"]
    results["defenses"][1]["victim_accuracy"] = 0.990
    page = render_html(results)
    defenses = page.split('id="defenses"')[1].split("</table>")[0]
    assert '<td class="num">0.007</td>' in defenses  # 0.997 clean - 0.990 under top1
    assert "1 h 02 min (runs: 24.2 s)" in page
    assert "mnist-5k:all (5,000 images)" in page
