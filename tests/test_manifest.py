"""The one reader of build manifests: what marks a folder as tinyml's, and clear errors for everything else."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from torch import nn

import tinyml
from tinyml.cli import main
from tinyml.errors import BuildFolderError
from tinyml.manifest import MANIFEST_FILES, MANIFEST_VERSION, build_kind, is_tinyml_build, read_manifest, write_manifest


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("compiled") / "mlp"
    calibration = np.random.default_rng(0).normal(size=(16, 6)).astype(np.float32)
    tinyml.compile(nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3)), calibration, out_dir=out, progress=False)
    return out


def run(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


def one_paragraph(result: Any) -> str:
    assert result.exit_code == 1, result.output
    message = result.output.strip()
    assert message.startswith("Error: ") and "\n" not in message and "Traceback" not in message, message
    return message


def test_a_compiled_model_is_marked_and_lists_its_files(compiled: Path) -> None:
    assert is_tinyml_build(compiled) and build_kind(compiled) == "model"
    manifest = read_manifest(compiled, "model")
    assert manifest["tinyml_build"] == "model" and manifest["manifest_version"] == MANIFEST_VERSION
    assert {"model.c", "model.h", "model_data.c", "graph.json", "graph.npz"} <= set(manifest["files"])
    assert manifest["arena_bytes"] > 0  # the build summary follows the marker fields


def test_firmware_manifest_is_marked(tmp_path: Path) -> None:
    (tmp_path / "firmware.elf").write_bytes(b"")
    write_manifest(tmp_path, "firmware", {"board": {}}, files=["firmware.elf"])
    assert build_kind(tmp_path) == "firmware"
    assert read_manifest(tmp_path, "firmware")["board"] == {}


@pytest.mark.parametrize(
    "make",
    [
        lambda d: None,  # empty folder
        lambda d: (d / "manifest.json").write_text(json.dumps({"title": "my thesis"})),  # a user's manifest.json
        lambda d: (d / "manifest.json").write_text('{"tinyml_build": "mod'),  # damaged
        lambda d: (d / "firmware.json").write_text(json.dumps({"tinyml_build": "model"})),  # marker of another kind
        lambda d: (d / "notes.txt").write_text("recordings"),
    ],
)
def test_folders_tinyml_did_not_make_are_not_builds(tmp_path: Path, make: Any) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    make(folder)
    assert not is_tinyml_build(folder)


def test_paths_that_are_not_folders_are_not_builds(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    assert not is_tinyml_build(tmp_path / "file")
    assert not is_tinyml_build(tmp_path / "missing")


def test_a_manifest_of_any_version_marks_the_folder(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps({"tinyml_build": "model", "manifest_version": 99}))
    assert is_tinyml_build(tmp_path)
    with pytest.raises(BuildFolderError, match="manifest version 99.*Upgrade tinyml"):
        read_manifest(tmp_path, "model")


@pytest.mark.parametrize(
    ("content", "phrase"),
    [
        ('{"weight_bytes": 10', "is damaged"),
        ("[1, 2]", "is damaged"),
        (json.dumps({"weight_bytes": 10}), "made by an older tinyml or by something else"),
        (json.dumps({"tinyml_build": "firmware", "manifest_version": 1}), "describes a 'firmware' build"),
        (json.dumps({"tinyml_build": "model", "manifest_version": 0}), "manifest version 0"),
        (json.dumps({"tinyml_build": "model", "manifest_version": 1, "files": ["model.c"]}), "model.c missing"),
    ],
)
def test_bad_model_manifests_are_one_paragraph(tmp_path: Path, content: str, phrase: str) -> None:
    (tmp_path / MANIFEST_FILES["model"]).write_text(content)
    with pytest.raises(BuildFolderError, match=phrase):
        read_manifest(tmp_path, "model")
    assert phrase in one_paragraph(run("validate", str(tmp_path)))


def test_each_command_names_the_kind_of_folder_it_needs(compiled: Path, tmp_path: Path) -> None:
    for command in ("run", "size"):
        message = one_paragraph(run(command, str(compiled)))
        assert "is a compiled model, not a firmware folder" in message and "tinyml build --board" in message
        message = one_paragraph(run(command, str(tmp_path)))
        assert "not a firmware folder made by tinyml" in message
    assert "not a compiled model made by tinyml" in one_paragraph(run("validate", str(tmp_path)))
    firmware = tmp_path / "fw"
    firmware.mkdir()
    write_manifest(firmware, "firmware", {}, files=[])
    assert f"the model it was built from is in {firmware / 'model'}" in one_paragraph(run("validate", str(firmware)))


def test_reserved_manifest_fields_cannot_be_overwritten(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="reserved"):
        write_manifest(tmp_path, "model", {"manifest_version": 7}, files=[])
