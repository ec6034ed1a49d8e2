"""bench/compression.py on a tiny configuration (few epochs, few inputs, the C on the host), so it keeps running."""

from __future__ import annotations

import io
import json
from types import ModuleType

import pytest
from rich.console import Console

MODEL_KEYS = {
    "model", "float_accuracy", "device_accuracy", "accuracy_drop_points", "float32_bytes", "stored_bytes",
    "compression_ratio", "elf_flash_bytes", "elf_flash_bytes_int8", "instructions", "instructions_int8",
}  # fmt: skip
STAGES = ["int8", "prune", "prune + share", "prune + share + huffman"]


@pytest.fixture(scope="module")
def bench(load_bench_script) -> ModuleType:
    return load_bench_script("compression")


@pytest.fixture(scope="module")
def report(bench: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> dict:
    config = bench.BenchConfig(
        models=("digits",),
        board=None,
        inputs=24,
        prune={"digits": {"sparsity": 0.8, "steps": 1, "epochs_per_step": 1}},
        share={"digits": {"bits": 4, "epochs": 0}},
        structured={"mode": "filters", "sparsity": 0.5, "types": ["conv"], "steps": 1, "epochs_per_step": 1},
    )
    return bench.run_bench(config, tmp_path_factory.mktemp("compression"))


def test_models_entry_has_the_issue_keys_and_compresses(report: dict) -> None:
    (entry,) = report["models"]
    assert MODEL_KEYS <= set(entry)
    assert entry["model"] == "digits"
    assert entry["samples"] == 24
    assert entry["outputs_match_reference"] is True
    assert entry["float32_bytes"] == 4 * 15_338  # the digits CNN's weights and biases, batch norms folded
    assert entry["compression_ratio"] == pytest.approx(entry["float32_bytes"] / entry["stored_bytes"])
    assert entry["compression_ratio"] > 10  # 80% pruned, 4-bit indices, Huffman-coded
    assert entry["accuracy_drop_points"] == pytest.approx(100 * (entry["float_accuracy"] - entry["device_accuracy"]))
    assert entry["elf_flash_bytes"] is None and entry["instructions"] is None  # no board in this run
    json.dumps(report)  # plain values only


def test_stages_in_the_papers_order_and_each_stores_less(report: dict) -> None:
    rows = report["stages"]
    assert [r["stage"] for r in rows] == STAGES
    stored = [r["stored_bytes"] for r in rows]
    assert stored[1] == stored[0]  # pruning alone keeps the raw int8 arrays
    assert stored[0] > stored[2] >= stored[3]
    assert all(r["outputs_match_reference"] for r in rows)


def test_huffman_against_packed_on_the_same_codebooks(report: dict) -> None:
    totals = report["huffman_vs_packed"]
    assert set(totals) == {"digits", "total"}
    digits = totals["digits"]
    assert digits["huffman_bytes"] < digits["fixed_width_bytes"] <= digits["packed_bytes"]
    assert digits["saving_percent"] == pytest.approx(100 * (1 - digits["huffman_bytes"] / digits["packed_bytes"]))


def test_structured_pruning_stores_less(report: dict) -> None:
    structured = report["structured"]
    assert structured["outputs_match_reference"] is True
    assert structured["stored_bytes"] < structured["stored_bytes_int8"] / 2  # conv2 and conv3 lose 3/4 of theirs


def test_tables_print(bench: ModuleType, report: dict) -> None:
    out = io.StringIO()
    bench.print_tables(report, Console(file=out, width=160))
    text = out.getvalue()
    assert "prune + share + huffman" in text and "Structured pruning" in text
