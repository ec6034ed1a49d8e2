"""The `tinyml search` command: settings from --config and options, the study, the table, the output folder."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console


def _size(value: str | None) -> int | None:
    from tinyml_plugins.search.config import parse_bytes

    if value is None:
        return None
    try:
        return parse_bytes(value)
    except ValueError as err:
        raise click.BadParameter(str(err)) from None


@click.command("search")
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="A TOML file of search settings and its [space] table (see the README).")
@click.option("--board", metavar="NAME", help="The board whose limits and kernels count (default stm32).")
@click.option("--ram", metavar="SIZE", help="RAM limit, e.g. 32KB (default: the board's RAM).")
@click.option("--flash", metavar="SIZE", help="Flash limit, e.g. 128KB (default: the board's flash).")
@click.option("--trials", type=click.IntRange(min=1), help="Candidates to train (default 20).")
@click.option("--epochs", type=click.IntRange(min=1), help="Epochs of each candidate's short training (default 4).")
@click.option("--final-epochs", type=click.IntRange(min=1), help="Epochs of the chosen model's training (default 40).")
@click.option("--objective", metavar="macs|instructions", help="What accuracy is traded against (default macs).")
@click.option("--executor", metavar="local|ray", help="Where trials run (default local processes).")
@click.option("--workers", type=click.IntRange(min=1), help="Trials trained at once (default 2).")
@click.option("--seed", type=int, help="Seed of the sampler and of every training (default 0).")
@click.option("--out", type=click.Path(file_okay=False), default="build/search", show_default=True,
              help="Output folder: the chosen model compiled, its factory, weights and the results.")
@click.option("--journal", type=click.Path(dir_okay=False),
              help="Optuna journal file of the study (default: <out>.journal); run again to resume.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def search_command(config_file: str | None, ram: str | None, flash: str | None, out: str, journal: str | None,
                   as_json: bool, **options) -> None:  # fmt: skip
    """Search for the most accurate model that fits the board's (or the given) RAM and flash.

    Every candidate is compiled untrained to its int8 graph first: its peak RAM (memory plan,
    input/output, stack) and flash are exact before training, and one over a limit is rejected.
    The others train briefly; NSGA-II trades accuracy against MACs (or estimated instructions).
    The chosen model is trained in full and written to --out, ready for `tinyml build`.
    """
    import json

    from tinyml.staging import check_output_dir
    from tinyml_plugins.search.config import load_config
    from tinyml_plugins.search.results import results_table, write_winner
    from tinyml_plugins.search.study import load_data, run_search

    config = load_config(config_file, {**options, "ram": _size(ram), "flash": _size(flash)})
    out_dir = Path(out)
    check_output_dir(out_dir)  # before the search, so a refused folder costs nothing
    journal_path = Path(journal) if journal else out_dir.with_name(out_dir.name + ".journal")
    result = run_search(config, journal_path, progress=not as_json)
    final = write_winner(result, load_data(config), out_dir, progress=not as_json)
    if as_json:
        click.echo(json.dumps(json.loads((out_dir / "search.json").read_text()), indent=2))
        return
    console = Console(width=140)
    console.print(results_table(result))
    click.echo(
        f"chosen: {final.candidate.architecture.label()}: test accuracy {100 * final.accuracy:.2f}% (float, "
        f"{config.final_epochs} epochs), {final.cost.describe()}\n"
        f"written to {out_dir} (study {result.study_name} in {journal_path}); build it with "
        f"`tinyml build --board {result.board.name} --recipe {out_dir / 'tinyml.toml'}`"
    )
