"""`tinyml search`: the space and its checks, costs from the real planner, the study (rejections before
training, resume from the journal), the Ray executor against the local one, the written winner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tinyml.cli import main
from tinyml.errors import FitError, RecipeError
from tinyml_plugins.search.config import load_config, parse_bytes
from tinyml_plugins.search.study import run_search

# A small space and tiny trainings: a trial takes well under a second.
TINY = {
    "trials": 3,
    "epochs": 1,
    "final_epochs": 2,
    "train_samples": 200,
    "workers": 2,
    "population": 2,
    "stack": 512,
    "space": {"resolutions": [8], "widths": [0.5, 1.0], "depths": [1], "blocks": ["ds", "ir"], "kernels": [3],
              "expansions": [1, 6]},
}


def tiny(**changes):
    return load_config(None, {**TINY, **changes})


def run_cli(*args: str):
    return CliRunner().invoke(main, list(args))


def test_sizes_parse_with_units():
    assert parse_bytes("32KB") == 32 * 1024
    assert parse_bytes("1.5 MB") == 1536 * 1024
    assert parse_bytes(4096) == 4096
    with pytest.raises(ValueError, match="not a size"):
        parse_bytes("32 parsecs")


def test_empty_space_is_one_paragraph_naming_the_field(tmp_path: Path):
    settings = tmp_path / "search.toml"
    settings.write_text("[space]\nblocks = []\n")
    with pytest.raises(RecipeError, match=r"search\.toml: the search space is empty: space\.blocks lists no value"):
        load_config(settings, {})
    result = run_cli("search", "--config", str(settings), "--out", str(tmp_path / "out"))
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and "space.blocks" in result.output
    assert "Traceback" not in result.output and result.output.count("\n") == 1


def test_unknown_executor_is_one_paragraph(tmp_path: Path):
    with pytest.raises(RecipeError, match=r"executor: Value error, unknown executor 'dask': use 'local'.*'ray'"):
        tiny(executor="dask")
    result = run_cli("search", "--executor", "dask", "--out", str(tmp_path / "out"))
    assert result.exit_code == 1 and "unknown executor 'dask'" in result.output
    assert "Traceback" not in result.output and result.output.count("\n") == 1


def test_limit_no_candidate_meets_names_the_smallest_candidates_needs(tmp_path: Path):
    with pytest.raises(FitError) as err:
        run_search(tiny(ram="1KB"), tmp_path / "study.journal", progress=False)
    message = str(err.value)
    assert "the RAM limit is 1,024 bytes" in message and "smallest candidate (r8 w0.5" in message
    assert "512 stack" in message and "\n" not in message
    assert not (tmp_path / "study.journal").exists()  # refused before a study was opened


LIMIT = 2600  # between the space's candidates: any stage with an expansion of 6 at width 1.0 goes over


@pytest.fixture(scope="module")
def first_search(tmp_path_factory: pytest.TempPathFactory):
    """Two candidates trained under LIMIT by local processes: (the result, its journal)."""
    journal = tmp_path_factory.mktemp("search") / "study.journal"
    return run_search(tiny(ram=LIMIT, trials=2), journal, progress=False), journal


def test_candidates_over_the_limit_are_rejected_untrained_and_the_search_resumes(first_search, tmp_path: Path):
    """Costs come from the real planner; a candidate over the RAM limit is pruned, never trained; a
    second run with more trials continues the study in the journal."""
    import shutil

    import optuna

    from tinyml.board.boards import resolve_board
    from tinyml_plugins.search.cost import compile_candidate

    first, first_journal = first_search
    assert first.trained_now == 2 and sum(c.fits for c in first.candidates) == 2
    journal = tmp_path / "study.journal"
    shutil.copy(first_journal, journal)
    second = run_search(tiny(ram=LIMIT, trials=4), journal, progress=False)
    trained = [c for c in second.candidates if c.fits]
    assert len(trained) == 4 and second.trained_now <= 2  # the first two came from the journal
    assert [c.number for c in first.candidates if c.fits] == [c.number for c in trained[:2]]
    assert all(c.cost.peak_ram <= LIMIT for c in trained)
    rejected = [c for c in second.candidates if not c.fits]
    assert rejected and all(c.cost.peak_ram > LIMIT for c in rejected)
    # the cost is the planner's arena on the real int8 graph, plus input/output and the stack
    sample = rejected[0]
    build = compile_candidate(sample.architecture, resolve_board("stm32"))
    io = sum(build.graph.tensors[n].nbytes for n in build.graph.inputs + build.graph.outputs)
    assert sample.cost.peak_ram == build.plan.arena_bytes + io + 512
    assert sample.cost.weight_bytes == build.generated.weight_bytes
    # the journal is Optuna's own: any Optuna tool reads it
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    study = optuna.load_study(study_name=second.study_name, storage=storage)
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 4
    assert len(study.get_trials(states=(optuna.trial.TrialState.PRUNED,))) == len(rejected)


def test_the_chosen_candidate_is_the_finalist_best_in_cross_validation(first_search):
    """The most accurate candidates of the short trainings are cross-validated with full trainings; the
    chosen one has the best (mean accuracy, then cross-entropy) of them."""
    result, _ = first_search
    trained = [c for c in result.candidates if c.fits]
    finalists = [c for c in trained if c.final is not None]
    distinct = {c.architecture for c in trained}
    assert len(finalists) == min(result.config.finalists, len(distinct))
    assert min(c.accuracy for c in finalists) >= max((c.accuracy for c in trained if c.final is None), default=0)
    assert all(0 <= c.final[0] <= 1 and c.final[1] > 0 for c in finalists)
    best = max(finalists, key=lambda c: (c.final[0], -c.final[1]))
    assert result.chosen in finalists and result.chosen.final == best.final


def test_ray_executor_gives_the_same_trials_as_local_processes(first_search, tmp_path: Path):
    pytest.importorskip("ray")
    import ray

    local, _ = first_search
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = run_search(tiny(ram=LIMIT, trials=2, executor="ray"), tmp_path / "ray.journal", progress=False)
    finally:
        ray.shutdown()
    assert not ray.is_initialized()

    def trials(result):
        return [(c.number, c.architecture, c.accuracy, c.final, c.cost.peak_ram, c.cost.macs)
                for c in result.candidates]  # fmt: skip

    assert remote.trained_now == 2 and trials(remote) == trials(local)


@pytest.mark.qemu
def test_search_command_writes_a_winner_that_tinyml_build_takes(tmp_path: Path, pio_core_dir: Path):
    settings = tmp_path / "search.toml"
    settings.write_text(_toml(TINY))
    out = tmp_path / "found"
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep")
    refused = run_cli("search", "--config", str(settings), "--out", str(user))
    assert refused.exit_code == 1 and "notes.txt" in refused.output
    assert (user / "notes.txt").read_text() == "keep"

    result = run_cli("search", "--config", str(settings), "--ram", "4KB", "--out", str(out), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["ram_limit"] == 4096 and summary["chosen"]["cost"]["peak_ram"] <= 4096
    assert {"winner.py", "winner.pt", "pareto.png", "report.html", "search.json"} <= {p.name for p in out.iterdir()}
    assert "Architecture search" in (out / "report.html").read_text()
    assert (tmp_path / "found.journal").is_file()

    firmware = tmp_path / "fw"
    built = run_cli("build", "--board", "stm32", "--model", f"{out / 'winner.py'}:make_model",
                    "--weights", str(out / "winner.pt"), "--calib", str(out / "calib.npz"),
                    "--val", str(out / "val.npz"), "--out", str(firmware))  # fmt: skip
    assert built.exit_code == 0, built.output
    assert (firmware / "firmware.elf").is_file()
    again = run_cli("search", "--config", str(settings), "--ram", "4KB", "--out", str(out), "--json")
    assert again.exit_code == 0, again.output  # an earlier search folder may be replaced; the study resumes


def _toml(settings: dict) -> str:
    lines = [f"{k} = {json.dumps(v)}" for k, v in settings.items() if k != "space"]
    lines.append("[space]")
    lines += [f"{k} = {json.dumps(v)}" for k, v in settings["space"].items()]
    return "\n".join(lines) + "\n"


def test_plugin_adds_the_search_command():
    from tinyml import plugins

    assert "search" in main.commands
    search = next(info for info in plugins.plugin_infos() if info.name == "search")
    assert search.hooks == ("tinyml_register_commands",)
