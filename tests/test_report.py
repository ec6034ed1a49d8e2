"""report.html: written by `tinyml compile`, self-contained, holding the build's layers and memory plan;
`tinyml report` redraws it from the folder and refuses a folder that is not a build.

The firmware side (flash per layer after `tinyml build`, instructions per layer after `tinyml run`)
is tested in test_qemu.py, on the firmware that test builds anyway.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch import nn

import tinyml
from tinyml.cli import main
from tinyml.codegen import describe_fused
from tinyml.errors import ReportError
from tinyml.report import REPORT_DATA, REPORT_HTML, Section, read_folder, render, write_report


class Net(nn.Module):
    """Named submodules, so layers have module paths; a tensor kept across a layer, so the plan has overlaps."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()
        )
        self.head = nn.Linear(8 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(x), 1))


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> tinyml.compiler.Build:
    torch.manual_seed(0)
    calibration = np.random.default_rng(0).normal(size=(16, 1, 8, 8)).astype(np.float32)
    out = tmp_path_factory.mktemp("report") / "net"
    return tinyml.compile(Net(), calibration, out_dir=out, progress=False)


class _Page(HTMLParser):
    """The text of every table row, the src/href of every element, and the script tags of a page."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: list[list[str]] = []
        self.links: list[str] = []
        self.scripts = 0
        self.images: list[str] = []
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self.links += [v for k, v in attrs if k in ("src", "href") and v]
        if tag == "script":
            self.scripts += 1
        if tag == "img":
            self.images.append(values.get("src") or "")
        if tag == "tr":
            self.rows.append([])
        if tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _row(page: _Page, first_cells: list[str]) -> list[str]:
    matches = [row for row in page.rows if row[: len(first_cells)] == first_cells]
    assert len(matches) == 1, f"no single row starting {first_cells} in {page.rows}"
    return matches[0]


def _assert_self_contained(text: str) -> _Page:
    page = _Page(text)
    assert page.scripts == 0
    assert not [link for link in page.links if not (link.startswith("#") or link.startswith("data:image/png;base64,"))]
    assert not re.search(r"https?://|url\(|@import", text)
    for src in page.images:
        png = base64.b64decode(src.removeprefix("data:image/png;base64,"), validate=True)
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(io.BytesIO(png)) as image:
            image.verify()
            assert image.format == "PNG" and min(image.size) > 200
    return page


def test_compile_writes_a_self_contained_report_of_its_layers_and_plan(compiled):
    folder = compiled.out_dir
    assert (folder / "report.txt").is_file()
    page = _assert_self_contained((folder / REPORT_HTML).read_text())
    assert len(page.images) == 2  # the compression bars and the memory timeline; no firmware yet
    weights = compiled.layer_weight_bytes()
    live = []
    for i, node in enumerate(compiled.graph.nodes):
        kernel = compiled.generated.kernels[node.name]
        shape = "×".join(map(str, compiled.graph.tensors[node.outputs[0]].shape))
        cell = node.name + (node.source if node.source != node.name else "")
        fused = describe_fused(node)
        cell += f"fused: {', '.join(fused)}" if fused else ""
        row = _row(page, [str(i), cell])
        assert kernel.reason  # every layer says why it got its kernel
        assert row[3:6] == [kernel.function + kernel.reason, shape, f"{weights[node.name]:,}"]
        live.append(int(row[7].replace(",", "")))
    # the busiest step holds exactly the bytes of the plan's lower bound
    assert max(live) == compiled.plan.lower_bound
    assert _row(page, ["", "total"])[5] == f"{compiled.generated.weight_bytes:,}"
    plan = compiled.plan
    text = " ".join(" ".join(row) for row in page.rows) + (folder / REPORT_HTML).read_text()
    for figure in (plan.arena_bytes, plan.lower_bound, plan.greedy_bytes):
        assert f"{figure:,} B" in text
    for name, first, last, offset, size in plan.timeline():
        row = _row(page, [name])
        steps = f"{first}–{last}" if last > first else str(first)
        assert row[1:4] == [f"{size:,}", f"{offset:,}–{offset + size:,}", steps]


def test_report_data_holds_the_plan_of_the_build(compiled):
    folder = read_folder(compiled.out_dir)
    assert folder.plan == compiled.plan
    assert [layer["name"] for layer in folder.model["layers"]] == [n.name for n in compiled.graph.nodes]
    assert folder.firmware is None and folder.run is None


def test_tinyml_report_redraws_the_page_from_the_folder(compiled, tmp_path, monkeypatch):
    folder = tmp_path / "net"
    shutil.copytree(compiled.out_dir, folder)
    (folder / REPORT_HTML).unlink()
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    done = CliRunner().invoke(main, ["report", str(folder)])  # no display: it prints the path
    assert done.exit_code == 0, done.output
    assert done.output.strip() == str((folder / REPORT_HTML).resolve())
    assert (folder / REPORT_HTML).read_text() == (compiled.out_dir / REPORT_HTML).read_text()
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in compiled.out_dir.iterdir())


def test_a_section_is_a_title_and_html(compiled):
    def extra(folder):
        return Section("Compression", f"<p>{len(folder.model['layers'])} layers stored raw</p>")

    def nothing(folder):
        return None

    text = render(read_folder(compiled.out_dir), [extra, nothing])
    assert "<h2>Compression</h2>\n<p>5 layers stored raw</p>" in text
    assert text.count("<section") == 1


@pytest.mark.parametrize("make", ["empty", "user files", "missing"])
def test_report_on_a_folder_that_is_no_build_is_one_paragraph(tmp_path, make):
    folder = tmp_path / "thesis"
    if make != "missing":
        folder.mkdir()
    if make == "user files":
        (folder / "chapter1.tex").write_text("my thesis")
    done = CliRunner().invoke(main, ["report", str(folder), "--no-open"])
    assert done.exit_code == 1
    message = done.output.strip()
    assert message.startswith("Error: ") and "\n" not in message and str(folder) in message
    assert "Traceback" not in done.output
    if make == "user files":
        assert [p.name for p in folder.iterdir()] == ["chapter1.tex"]
        assert (folder / "chapter1.tex").read_text() == "my thesis"


def test_damaged_or_foreign_report_data_is_named(compiled, tmp_path):
    folder = tmp_path / "net"
    shutil.copytree(compiled.out_dir, folder)
    (folder / REPORT_HTML).unlink()
    data = (compiled.out_dir / REPORT_DATA).read_text()
    (folder / REPORT_DATA).write_text(data[: len(data) // 2])
    with pytest.raises(ReportError, match=re.escape(str(folder / REPORT_DATA))):
        write_report(folder)
    (folder / REPORT_DATA).write_text(json.dumps({**json.loads(data), "version": 99}))
    with pytest.raises(ReportError, match="version 99"):
        write_report(folder)
    broken = json.loads(data)
    del broken["layers"][0]["kernel"]
    (folder / REPORT_DATA).write_text(json.dumps(broken))
    done = CliRunner().invoke(main, ["report", str(folder), "--no-open"])
    assert done.exit_code == 1 and "kernel" in done.output and "\n" not in done.output.strip()
    assert not (folder / REPORT_HTML).exists() and not list(folder.glob(".*"))


def test_the_plan_figure_names_layers_on_its_steps(compiled):
    names = [n.name for n in compiled.graph.nodes]
    figure = compiled.plan.figure(step_labels=names)
    labels = [t.get_text() for t in figure.axes[0].get_xticklabels()]
    assert labels == [f"{i}: {name}" for i, name in enumerate(names)]
    legend = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert legend == [
        f"arena {compiled.plan.arena_bytes:,} B",
        f"lower bound {compiled.plan.lower_bound:,} B",
        f"TFLM greedy {compiled.plan.greedy_bytes:,} B",
    ]
