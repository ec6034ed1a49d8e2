"""Finding and loading plugins: the core's own modules, then every entry point of group "tinyml".

Built-in techniques are listed as entry points in tinyml's own pyproject.toml, so they are found
exactly as a third-party ``pip install tinyml-foo`` plugin is. A plugin that fails to load is
named in a `TinymlPluginWarning` and the others still load. Set ``TINYML_DISABLE_PLUGIN_AUTOLOAD``
to load no entry points; ``TINYML_PLUGINS=mod1,mod2`` names modules to load in any case.
"""

from __future__ import annotations

import functools
import importlib
import os
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

from tinyml import hookspecs
from tinyml.errors import PluginError

if TYPE_CHECKING:
    from tinyml.board.boards import Board
    from tinyml.ir import OpDefinition
    from tinyml.technique import Technique

CORE_PLUGINS = ("tinyml.kernels", "tinyml.weights", "tinyml.board.boards")
ENTRY_POINT_GROUP = "tinyml"
DISABLE_AUTOLOAD_ENV = "TINYML_DISABLE_PLUGIN_AUTOLOAD"
PLUGINS_ENV = "TINYML_PLUGINS"


class TinymlPluginWarning(UserWarning):
    """A plugin could not be loaded; the toolkit goes on without it."""


@dataclass(frozen=True)
class PluginInfo:
    """One loaded plugin as `tinyml plugins` lists it."""

    name: str
    distribution: str
    version: str
    hooks: tuple[str, ...]


# plugin name -> (distribution, version), filled while loading
_origins: dict[str, tuple[str, str]] = {}
# technique class -> name of the plugin that offers it, filled by `techniques()`
_technique_plugins: dict[type, str] = {}


@functools.cache
def plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager with every plugin loaded (built once, then cached)."""
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    _origins.clear()
    core = ("tinyml", _version("tinyml"))
    for module_name in CORE_PLUGINS:
        _load_core(pm, module_name, core)
    if not os.environ.get(DISABLE_AUTOLOAD_ENV):
        for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
            _load_entry_point(pm, entry_point)
    for module_name in filter(None, (m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(","))):
        _load_module(pm, module_name, f"{module_name} (named in {PLUGINS_ENV})", _module_origin(module_name))
    return pm


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "-"


def _module_origin(module_name: str) -> tuple[str, str]:
    """(distribution, version) that installed the top-level package of `module_name`, or ("-", "-")."""
    distributions = metadata.packages_distributions().get(module_name.partition(".")[0], [])
    if not distributions:
        return ("-", "-")
    return (distributions[0], _version(distributions[0]))


def _load_core(pm: pluggy.PluginManager, module_name: str, origin: tuple[str, str]) -> None:
    """Register a core module; one not written yet is skipped, one that fails to import is reported."""
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name == module_name:
            return
        _warn(f"core plugin {module_name}", err)
        return
    except Exception as err:
        _warn(f"core plugin {module_name}", err)
        return
    _register(pm, module, module_name, f"core plugin {module_name}", origin)


def _load_entry_point(pm: pluggy.PluginManager, entry_point: metadata.EntryPoint) -> None:
    if pm.get_plugin(entry_point.name) is not None or pm.is_blocked(entry_point.name):
        return  # the same distribution seen twice on sys.path
    dist = entry_point.dist
    origin = (dist.name, dist.version) if dist else ("-", "-")
    where = f"entry point '{entry_point.name} = {entry_point.value}' of distribution {origin[0]} {origin[1]}"
    try:
        plugin = entry_point.load()
    except Exception as err:
        _warn(where, err)
        return
    _register(pm, plugin, entry_point.name, where, origin)


def _load_module(pm: pluggy.PluginManager, module_name: str, where: str, origin: tuple[str, str]) -> None:
    try:
        module = importlib.import_module(module_name)
    except Exception as err:
        _warn(where, err)
        return
    if not pm.is_registered(module):
        _register(pm, module, module_name, where, origin)


def _register(pm: pluggy.PluginManager, plugin: Any, name: str, where: str, origin: tuple[str, str]) -> None:
    """Register `plugin`; a hook implementation that matches no hook spec is reported, not registered."""
    try:
        pm.register(plugin, name=name)
    except Exception as err:
        _warn(where, err)
        return
    unknown = [caller.name for caller in pm.get_hookcallers(plugin) or [] if not caller.has_spec()]
    if unknown:
        pm.unregister(plugin)
        known = ", ".join(sorted(n for n in dir(hookspecs) if n.startswith("tinyml_")))
        _warn(where, f"it implements unknown hook(s) {', '.join(unknown)}; the hooks are: {known}")
        return
    _origins[name] = origin


def _warn(where: str, problem: BaseException | str) -> None:
    if isinstance(problem, BaseException):
        problem = f"{type(problem).__name__}: {problem}"
    warnings.warn(f"tinyml plugin from {where} was not loaded: {problem}", TinymlPluginWarning, stacklevel=3)


def _each_result(hook_name: str) -> list[tuple[str, Any]]:
    """(plugin name, item) for every item every plugin returns from a list-returning hook."""
    pm = plugin_manager()
    pairs = []
    for impl in getattr(pm.hook, hook_name).get_hookimpls():
        for item in impl.function() or []:
            pairs.append((impl.plugin_name, item))
    return pairs


def techniques() -> dict[str, type[Technique]]:
    """Every technique class the plugins offer, by name."""
    from tinyml.technique import Technique

    found: dict[str, type[Technique]] = {}
    offered_by: dict[str, str] = {}
    for plugin, cls in _each_result("tinyml_techniques"):
        if not (isinstance(cls, type) and issubclass(cls, Technique)):
            raise PluginError(
                f"Plugin '{plugin}' returned {cls!r} from tinyml_techniques; expected a Technique subclass."
            )
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or getattr(cls, "stage", None) not in ("train", "graph"):
            raise PluginError(
                f"Plugin '{plugin}' offers technique class {cls.__qualname__} without a string `name` and a "
                "`stage` of 'train' or 'graph'."
            )
        if name in found and found[name] is not cls:
            raise PluginError(
                f"Two plugins offer a technique named '{name}': '{offered_by[name]}' "
                f"({found[name].__module__}) and '{plugin}' ({cls.__module__}). Uninstall one of them."
            )
        found[name], offered_by[name] = cls, plugin
        _technique_plugins[cls] = plugin
    return found


def ops() -> dict[str, OpDefinition]:
    """Every IR op the plugins add (hook ``tinyml_ops``), by name."""
    from tinyml.ir import OPS, OpDefinition

    found: dict[str, OpDefinition] = {}
    offered_by: dict[str, str] = {}
    for plugin, op in _each_result("tinyml_ops"):
        if not isinstance(op, OpDefinition):
            raise PluginError(f"Plugin '{plugin}' returned {op!r} from tinyml_ops; expected a tinyml.ir.OpDefinition.")
        if op.name in OPS or (op.name in found and found[op.name] is not op):
            other = "the core" if op.name in OPS else f"'{offered_by[op.name]}'"
            raise PluginError(f"Plugin '{plugin}' adds an op named '{op.name}', which {other} already defines.")
        found[op.name], offered_by[op.name] = op, plugin
    return found


def boards() -> dict[str, Board]:
    """Every board the plugins offer, by name and by each of its aliases."""
    found: dict[str, Board] = {}
    offered_by: dict[str, str] = {}
    for plugin, board in _each_result("tinyml_boards"):
        for key in (board.name, *getattr(board, "aliases", ())):
            if key in found and found[key] is not board:
                raise PluginError(
                    f"Two plugins offer a board called '{key}': '{offered_by[key]}' ({found[key].name}) and "
                    f"'{plugin}' ({board.name})."
                )
            found[key], offered_by[key] = board, plugin
    return found


def plugin_infos() -> list[PluginInfo]:
    """Each loaded plugin: its name, the distribution and version it came from, the hooks it implements."""
    pm = plugin_manager()
    infos = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:
            continue  # blocked
        distribution, version = _origins.get(name, ("-", "-"))
        hooks = tuple(sorted(caller.name for caller in pm.get_hookcallers(plugin) or []))
        infos.append(PluginInfo(name, distribution, version, hooks))
    return infos


def register_commands(cli: Any) -> None:
    """Let every plugin add its commands to the click group `cli` (hook ``tinyml_register_commands``).

    A plugin that raises, or that adds a command under a name already taken, is named in a
    `TinymlPluginWarning`; its commands are left out and the others are kept.
    """
    hook = plugin_manager().hook.tinyml_register_commands
    for impl in hook.get_hookimpls():
        before = dict(cli.commands)
        try:
            impl.function(*({"cli": cli}[name] for name in impl.argnames))
        except Exception as err:  # noqa: BLE001 - a broken plugin must not take the command line down
            cli.commands = before
            warnings.warn(
                f"{describe_plugin(impl.plugin_name)} failed to add its commands: {type(err).__name__}: {err}",
                TinymlPluginWarning,
                stacklevel=2,
            )
            continue
        taken = sorted(name for name in before if cli.commands.get(name) is not before[name])
        if taken:
            cli.commands = before
            warnings.warn(
                f"{describe_plugin(impl.plugin_name)} tried to add command(s) {', '.join(taken)}, which already "
                "exist; its commands are left out.",
                TinymlPluginWarning,
                stacklevel=2,
            )


def describe_plugin(name: str) -> str:
    """How an error names a plugin: its name and the distribution (and version) it came from."""
    distribution, version = _origins.get(name, ("-", "-"))
    if distribution == "-":
        return f"plugin '{name}' (not from an installed distribution)"
    return f"plugin '{name}' from distribution {distribution} {version}"


def describe_technique(technique: Technique) -> str:
    """How an error names a technique: its name and the plugin that offers it (or its class)."""
    cls = type(technique)
    plugin = _technique_plugins.get(cls)
    source = describe_plugin(plugin) if plugin else f"class {cls.__module__}.{cls.__qualname__}"
    return f"technique '{technique.name}' ({source})"


def first_answer(pm: pluggy.PluginManager, hook_name: str, expected: type, what: str, **kwargs: Any) -> Any:
    """Call a ``firstresult`` hook as pluggy does (last registered first, tryfirst/trylast kept; hook
    wrappers are not run) and check the answer's type, so a plugin that raises or answers with
    something else is named with its distribution.

    `what` says what was asked (e.g. "node `conv1`") for the message.
    """
    from tinyml.errors import TinymlError

    hook = getattr(pm.hook, hook_name)
    for impl in reversed(hook.get_hookimpls()):
        if impl.hookwrapper or getattr(impl, "wrapper", False):
            continue
        try:
            answer = impl.function(*(kwargs[name] for name in impl.argnames))
        except TinymlError:
            raise
        except Exception as err:
            raise PluginError(
                f"{describe_plugin(impl.plugin_name)} failed in {hook_name} for {what}: "
                f"{type(err).__name__}: {err}. Run with --debug for the traceback; report it to the plugin's authors "
                "or uninstall it."
            ) from err
        if answer is None:
            continue
        if not isinstance(answer, expected):
            raise PluginError(
                f"{describe_plugin(impl.plugin_name)} answered {hook_name} for {what} with {_short_repr(answer)} "
                f"(a {type(answer).__name__}); the hook must return a {expected.__module__}.{expected.__qualname__} "
                "or None. Report it to the plugin's authors or uninstall it."
            )
        return answer
    return None


def _short_repr(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def kernel_source_dirs() -> list[Path]:
    """Every directory of C the plugins give through `tinyml_kernel_sources`, the core library first.

    Each holds `include/` and/or `src/`; the host build and every board build compile them all.
    """
    dirs: list[Path] = []
    for plugin, item in _each_result("tinyml_kernel_sources"):
        path = Path(item)
        if not ((path / "include").is_dir() or (path / "src").is_dir()):
            raise PluginError(
                f"{describe_plugin(plugin)} gives {path} from tinyml_kernel_sources, which has no include/ or src/ "
                "folder: the hook returns directories holding include/*.h and src/*.c."
            )
        if path not in dirs:
            dirs.append(path)
    return dirs
