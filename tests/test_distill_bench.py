"""bench/distill.py on a tiny configuration (two seeds, few epochs, the C on the host), so it keeps running."""

from __future__ import annotations

import io
import math
from pathlib import Path
from types import ModuleType

import pytest
from rich.console import Console


@pytest.fixture(scope="module")
def bench(load_bench_script) -> ModuleType:
    return load_bench_script("distill")


@pytest.mark.parametrize(
    "student, hidden, weights", [("cnn", (16,), 644), ("mlp", (10,), 740), ("mlp", (16, 16), 1440)]
)
def test_students_stay_within_the_weight_limit(bench: ModuleType, student: str, hidden: tuple, weights: int) -> None:
    import numpy as np
    import torch

    import tinyml

    model = bench.BenchConfig(student=student, hidden=hidden).make_student().eval()
    build = tinyml.compile(model, np.random.default_rng(0).random((8, 1, 8, 8), dtype=np.float32), progress=False)
    assert bench.int8_weight_bytes(build) == weights <= bench.WEIGHT_LIMIT
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_bench_reports_both_students_per_seed(bench: ModuleType, tmp_path: Path) -> None:
    config = bench.BenchConfig(
        seeds=2, board=None, inputs=40, student="mlp", hidden=(10,), distill={**bench.DISTILL, "epochs": 2}
    )
    report = bench.run_bench(config, tmp_path)
    for key in ("student_alone_mean", "distilled_mean"):
        assert 0.0 <= report[key] <= 1.0
    for key in ("student_alone_int8_per_seed", "distilled_int8_per_seed", "distilled_float_per_seed"):
        assert len(report[key]) == 2
    assert report["student"] == "mlp 64-10-10"
    assert report["student_int8_weight_bytes"] == 740 and report["student_within_limit"]
    assert report["outputs_match_reference"]
    assert report["samples"] == 40
    # the two kinds differ only in alpha, so with the teacher's loss switched on the students must differ
    assert report["student_alone_float_per_seed"] != report["distilled_float_per_seed"]
    out = io.StringIO()
    bench.print_table(report, Console(file=out, width=200))
    assert "distilled - alone" in out.getvalue()


def test_select_chooses_the_student_by_its_gain_on_the_validation_split(
    bench: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tinyml.examples import get_example

    monkeypatch.setattr(bench, "SELECTION_STUDENTS", (("mlp", (10,)), ("mlp", (6, 6))))
    monkeypatch.setattr(bench, "SELECTION_SOFT", ((4.0, 0.9),))
    monkeypatch.setattr(bench, "SELECTION_EPOCHS", (1, 3))
    selection = bench.select_student(seeds=1)
    train = len(get_example("digits").x_train)
    assert selection["validation_samples"] == math.ceil(train * bench.VALIDATION_FRACTION)  # as scikit-learn rounds
    assert len(selection["rows"]) == 2 * 4  # per student: alone for 2 epoch counts, distilled for 1 x 2
    gains = {}
    for student in ("mlp 64-10-10", "mlp 64-6-6-10"):
        rows = [r for r in selection["rows"] if r["student"] == student]
        alone = max(r["validation_mean"] for r in rows if r["alpha"] == 0.0)
        distilled = max(r["validation_mean"] for r in rows if r["alpha"] > 0.0)
        gains[student] = distilled - alone
    chosen = selection["chosen"]
    assert chosen["student"] == max(gains, key=gains.__getitem__)
    assert chosen["validation_gain_points"] == pytest.approx(100 * gains[chosen["student"]])
    assert chosen["alone_epochs"] in (1, 3) and chosen["epochs"] in (1, 3) and chosen["alpha"] == 0.9
    out = io.StringIO()
    bench.print_selection(selection, Console(file=out, width=200))
    assert f"chosen: {chosen['student']}" in out.getvalue()
