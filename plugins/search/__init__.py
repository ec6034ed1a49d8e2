"""`tinyml search`: architecture search under a board's RAM and flash limits (Optuna, NSGA-II).

The plugin adds the command through the `tinyml_register_commands` hook; the modules are the
search space (`space`), a candidate's cost on the board (`cost`, `probe`), training (`training`),
where trials run (`executor`), the study (`study`) and what it writes (`results`).
"""

from __future__ import annotations

from tinyml.hookspecs import hookimpl


@hookimpl
def tinyml_register_commands(cli):
    from tinyml_plugins.search.command import search_command

    cli.add_command(search_command)
