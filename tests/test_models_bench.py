"""bench/models.py: the MLPerf Tiny architectures have the reference shapes, and the smallest runs on a board."""

from __future__ import annotations

import json
from types import ModuleType

import pytest
import torch
from torch import nn

ROW_KEYS = {
    "model", "board", "instructions", "estimated_cycles", "reference_cycles", "flash_bytes", "peak_ram_bytes",
    "stack_bytes", "outputs_match_reference",
}  # fmt: skip


@pytest.fixture(scope="module")
def bench(load_bench_script) -> ModuleType:
    return load_bench_script("models")


def test_architectures_have_the_reference_shapes(bench: ModuleType) -> None:
    outputs = {"kws": 12, "vww": 2, "ic": 10, "anomaly": 640, "mbv2": 2}
    for name, (_, _, shape, _) in bench.MODELS.items():
        model = bench.random_model(name)
        with torch.no_grad():
            assert model(torch.zeros(1, *shape)).shape == (1, outputs[name]), name
    kws = bench.random_model("kws")
    with torch.no_grad():
        assert kws[0](torch.zeros(1, 1, 49, 10)).shape == (1, 64, 25, 5)  # conv 10x4 stride 2, 'same'
    vww = bench.random_model("vww")
    depthwise = [m for m in vww.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert len(depthwise) == 13
    assert [m.out_channels for m in vww.modules() if isinstance(m, nn.Conv2d)][0] == 8
    assert depthwise[-1].out_channels == 256
    ic = bench.random_model("ic")
    assert sum(isinstance(m, bench.ResidualBlock) for m in ic.modules()) == 3
    assert sum(isinstance(m, nn.Linear) for m in bench.random_model("anomaly").modules()) == 10


@pytest.mark.qemu
def test_anomaly_on_cortex_m4(bench: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["--json", "--models", "anomaly", "--boards", "cortex-m4"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert ROW_KEYS <= row.keys()
    assert row["outputs_match_reference"] is True
    assert row["reference_cycles"] == 575_000
    macs = 640 * 128 + 3 * 128 * 128 + 128 * 8 + 8 * 128 + 3 * 128 * 128 + 128 * 640
    assert row["instructions"] > macs / 4  # at most two SMLADs' worth of MACs per instruction, and then some
    assert row["peak_ram_bytes"] >= 2 * 640 + row["stack_bytes"]
    assert 0 < row["stack_bytes"] < row["peak_ram_bytes"] < row["flash_bytes"]
