"""Output folders: a build replaces only an empty folder or an earlier tinyml build, never the user's files.

Every refusal is checked through the real `tinyml` command and leaves the user's folder byte for
byte as it was; interrupted builds (Ctrl-C, SIGTERM, a killed process) leave no staging folder.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import click.testing
import pytest
from click.testing import CliRunner
from user_project import snapshot, write_user_project

from tinyml.cli import main
from tinyml.errors import OutputDirError
from tinyml.manifest import is_tinyml_build
from tinyml.staging import check_output_dir, remove_stale_staging, staged_directory

TINYML = str(Path(sys.executable).parent / "tinyml")
needs_toolchain = pytest.mark.skipif(
    shutil.which("arm-none-eabi-gcc") is None, reason="needs arm-none-eabi-gcc (make setup installs it)"
)


def run(*args: str) -> click.testing.Result:
    return CliRunner().invoke(main, list(args))


def assert_refused(result: click.testing.Result, *phrases: str) -> None:
    """Exit 1 with one paragraph that names the problem and says what to do."""
    assert result.exit_code == 1, result.stdout + result.stderr
    message = result.stderr
    assert message.startswith("Error: The output folder ") and message.count("\n") == 1, message
    assert "choose another --out" in message
    assert "Traceback" not in message + result.stdout
    for phrase in phrases:
        assert phrase in message, message


def staging_left(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if ".tinyml-" in p.name]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write_user_project(tmp_path / "project")


@pytest.fixture(scope="module")
def earlier_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished compile of the user's project: what a later build may replace."""
    folder = write_user_project(tmp_path_factory.mktemp("earlier") / "project")
    result = run("compile", "--recipe", str(folder / "tinyml.toml"), "--out", str(folder.parent / "build"))
    assert result.exit_code == 0, result.stderr
    return folder.parent / "build"


def test_compile_out_dot_in_the_project_folder_keeps_every_file(project: Path, monkeypatch) -> None:
    before = snapshot(project)
    monkeypatch.chdir(project)
    assert_refused(run("compile", "--out", "."), "(calib.npz, net.pt, net.py and 2 more)")
    assert snapshot(project) == before
    assert staging_left(project.parent) == []


def test_compile_refuses_a_folder_with_unrelated_files(project: Path, tmp_path: Path) -> None:
    thesis = tmp_path / "thesis"
    (thesis / "recordings").mkdir(parents=True)
    (thesis / "thesis.tex").write_text("\\chapter{Results}\n")
    (thesis / "recordings" / "take1.wav").write_bytes(b"RIFF....")
    before = snapshot(thesis)
    assert_refused(run("compile", "--recipe", str(project / "tinyml.toml"), "--out", str(thesis)), "thesis.tex")
    assert snapshot(thesis) == before


def test_build_refuses_a_folder_with_unrelated_files_before_compiling(tmp_path: Path) -> None:
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "notes.md").write_text("do not lose me\n")
    before = snapshot(thesis)
    assert_refused(run("build", "--board", "stm32", "--example", "digits", "--out", str(thesis)), "notes.md")
    assert snapshot(thesis) == before


def test_out_is_the_recipes_own_folder(project: Path, tmp_path: Path, monkeypatch) -> None:
    before = snapshot(project)
    monkeypatch.chdir(tmp_path)
    assert_refused(run("compile", "--recipe", str(project / "tinyml.toml"), "--out", str(project)))
    assert snapshot(project) == before


def test_out_that_holds_an_input_is_refused_even_when_it_is_an_earlier_build(
    earlier_build: Path, tmp_path: Path
) -> None:
    """A user who put calibration data into a build folder must not lose it when rebuilding there."""
    build = tmp_path / "build"
    shutil.copytree(earlier_build, build)
    shutil.copy(earlier_build.parent / "project" / "calib.npz", build / "calib.npz")
    before = snapshot(build)
    project = earlier_build.parent / "project"
    result = run(
        "compile",
        *("--model", f"{project / 'net.py'}:make_model", "--calib", str(build / "calib.npz")),
        *("--out", str(build)),
    )
    assert_refused(result, "calib.npz, an input of this build")
    assert snapshot(build) == before


def test_out_that_is_an_ancestor_of_the_inputs(project: Path, tmp_path: Path, monkeypatch) -> None:
    before = snapshot(tmp_path)
    monkeypatch.chdir(project)
    assert_refused(run("compile", "--out", str(tmp_path)))
    assert snapshot(tmp_path) == before


def test_symlink_to_a_user_folder_is_refused_and_the_link_kept(project: Path, tmp_path: Path) -> None:
    link = tmp_path / "out-link"
    link.symlink_to(project, target_is_directory=True)
    before = snapshot(project)
    assert_refused(run("compile", "--recipe", str(project / "tinyml.toml"), "--out", str(link)))
    assert snapshot(project) == before
    assert link.is_symlink() and link.resolve() == project.resolve()


def test_symlink_to_an_earlier_build_is_replaced_and_the_build_it_pointed_to_kept(
    earlier_build: Path, tmp_path: Path
) -> None:
    build = tmp_path / "v1"
    shutil.copytree(earlier_build, build)
    (build / "model.c").write_text("/* v1 */\n")
    before = snapshot(build)
    link = tmp_path / "latest"
    link.symlink_to(build, target_is_directory=True)
    project = earlier_build.parent / "project"
    result = run("compile", "--recipe", str(project / "tinyml.toml"), "--out", str(link))
    assert result.exit_code == 0, result.stderr
    assert not link.is_symlink() and is_tinyml_build(link)
    assert "v1" not in (link / "model.c").read_text()
    assert snapshot(build) == before
    assert staging_left(tmp_path) == []


def test_dangling_symlink_is_refused(project: Path, tmp_path: Path) -> None:
    link = tmp_path / "out"
    link.symlink_to(tmp_path / "gone", target_is_directory=True)
    assert_refused(run("compile", "--recipe", str(project / "tinyml.toml"), "--out", str(link)), "not a folder")
    assert link.is_symlink()


def test_an_earlier_build_is_replaced(earlier_build: Path, tmp_path: Path) -> None:
    build = tmp_path / "build"
    shutil.copytree(earlier_build, build)
    (build / "model.c").write_text("/* stale */\n")
    project = earlier_build.parent / "project"
    result = run("compile", "--recipe", str(project / "tinyml.toml"), "--out", str(build))
    assert result.exit_code == 0, result.stderr
    assert "stale" not in (build / "model.c").read_text()
    assert json.loads((build / "manifest.json").read_text())["tinyml_build"] == "model"
    assert staging_left(tmp_path) == []


def test_a_manifest_that_tinyml_did_not_write_is_not_enough(tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "manifest.json").write_text('{"name": "my web app"}\n')
    with pytest.raises(OutputDirError, match="holds files that no tinyml build wrote"):
        check_output_dir(other)
    (other / "manifest.json").write_text("not json")
    with pytest.raises(OutputDirError):
        check_output_dir(other)
    (other / "manifest.json").write_text('{"tinyml_build": "model"}\n')
    assert check_output_dir(other) == other.resolve()
    (other / "manifest.json").write_text('{"generator": "webpack", "layers": [], "techniques": []}\n')
    with pytest.raises(OutputDirError):
        check_output_dir(other)


def test_a_build_from_before_the_marker_field_is_recognised(earlier_build: Path, tmp_path: Path) -> None:
    build = tmp_path / "build"
    shutil.copytree(earlier_build, build)
    manifest = json.loads((build / "manifest.json").read_text())
    for key in ("tinyml_build", "manifest_version", "tinyml_version", "files"):
        del manifest[key]
    (build / "manifest.json").write_text(json.dumps(manifest))
    assert check_output_dir(build) == build.resolve()


def test_out_under_a_file(project: Path, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine\n")
    result = run("compile", "--recipe", str(project / "tinyml.toml"), "--out", str(tmp_path / "notes.txt" / "build"))
    assert_refused(result, "notes.txt is a file")
    assert (tmp_path / "notes.txt").read_text() == "mine\n"
    result = run("build", "--board", "stm32", "--out", str(tmp_path / "notes.txt" / "fw"))
    assert_refused(result, "notes.txt is a file")


def test_out_in_a_read_only_folder(project: Path, tmp_path: Path) -> None:
    """A real read-only file system (tests run as root, so permission bits would not stop a write):
    a read-only tmpfs mounted in a private mount namespace that ends with the command."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare to mount a read-only folder")
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    script = (
        f'mount -t tmpfs -o ro tmpfs "{readonly}" || exit 77; '
        f'exec "{TINYML}" compile --recipe "{project / "tinyml.toml"}" --out "{readonly / "build"}"'
    )
    result = subprocess.run(["unshare", "--mount", "sh", "-c", script], capture_output=True, text=True, timeout=300)
    if result.returncode == 77 or "unshare failed" in result.stderr:
        pytest.skip(f"cannot mount a read-only folder here: {result.stderr.strip()}")
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("Error: The output folder ") and result.stderr.count("\n") == 1, result.stderr
    assert "read-only" in result.stderr or "Read-only" in result.stderr
    assert "Traceback" not in result.stderr


def test_ctrl_c_leaves_no_staging_folder_and_the_earlier_build(earlier_build: Path, tmp_path: Path) -> None:
    build = tmp_path / "build"
    shutil.copytree(earlier_build, build)
    before = snapshot(build)
    with pytest.raises(KeyboardInterrupt), staged_directory(build) as staging:
        (staging / "model.c").write_text("/* half */")
        raise KeyboardInterrupt
    assert snapshot(build) == before
    assert staging_left(tmp_path) == []


def test_stale_staging_of_a_dead_process_is_removed_by_the_next_build(project: Path, tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".build.tinyml-{dead.pid}-abc123"
    (stale / "project").mkdir(parents=True)
    alive = tmp_path / f".build.tinyml-{os.getpid()}-xyz789"  # a build still running: kept
    alive.mkdir()
    users = tmp_path / ".build.backup"  # the user's own hidden folder: kept
    users.mkdir()
    result = run("compile", "--recipe", str(project / "tinyml.toml"), "--out", str(tmp_path / "build"))
    assert result.exit_code == 0, result.stderr
    assert not stale.exists()
    assert alive.is_dir() and users.is_dir()
    assert remove_stale_staging(tmp_path) == []


@needs_toolchain
@pytest.mark.parametrize(
    ("signum", "exit_code", "said"),
    [(signal.SIGTERM, 128 + signal.SIGTERM, "Terminated"), (signal.SIGINT, 1, "Aborted")],
    ids=["SIGTERM", "Ctrl-C"],
)
def test_signal_during_a_firmware_build_exits_cleanly_without_staging(
    tmp_path: Path, signum: int, exit_code: int, said: str
) -> None:
    out = tmp_path / "fw"
    process = subprocess.Popen(
        [TINYML, "build", "--board", "stm32", "--example", "digits", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not staging_left(tmp_path):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the build never started staging"
        time.sleep(0.05)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == exit_code, stderr
    assert said in stderr and "Traceback" not in stderr
    assert staging_left(tmp_path) == []
    assert not out.exists()


@needs_toolchain
def test_firmware_builds_into_a_path_with_dollar_spaces_and_quotes(tmp_path: Path) -> None:
    """PlatformIO expands `$` in paths ("Unknown board ID"): the project is built elsewhere and moved."""
    out = tmp_path / "my $HOME 'models' \"v2\"" / "fw $1"
    result = run("build", "--board", "stm32", "--example", "digits", "--inputs", "1", "--out", str(out))
    assert result.exit_code == 0, result.stderr
    assert (out / "firmware.elf").is_file()
    assert json.loads((out / "firmware.json").read_text())["tinyml_build"] == "firmware"
    assert staging_left(out.parent) == []
