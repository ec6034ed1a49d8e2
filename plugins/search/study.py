"""The search: an Optuna study (NSGA-II, accuracy against MACs or instructions) under hard RAM and flash limits.

Each trial draws a candidate; its cost on the board (`tinyml_plugins.search.cost`) is measured
first and a candidate over a limit is told as pruned, never trained. The others are trained
briefly through the executor, a batch of `workers` at a time, and told their validation accuracy
and cost. The study lives in an Optuna journal file, so an interrupted search resumes where it
stopped (run the same command again) and any Optuna tool can inspect it. The `finalists` most
accurate candidates are then cross-validated with full trainings, and the best of them is the
chosen one.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tinyml.errors import DataError, FitError, RecipeError, TinymlError
from tinyml_plugins.search.config import SearchConfig
from tinyml_plugins.search.cost import Cost, candidate_cost
from tinyml_plugins.search.executor import make_executor
from tinyml_plugins.search.probe import BoardProbe, given_probe, measure_probe
from tinyml_plugins.search.space import Architecture, from_params, smallest_candidates, suggest
from tinyml_plugins.search.training import TrialTask, run_finalist, run_trial

if TYPE_CHECKING:
    import optuna

    from tinyml.board.boards import Board

VALIDATION_SHARE = 0.2  # of the training split, held out to score candidates (the test split stays unseen)
DRAWS_PER_TRIAL = 40  # candidates drawn per trained one before the search gives up on the limits


@dataclass
class SearchData:
    """Images (N, C, H, W) float32 and labels: the trials train on `train` and are scored on `val`;
    the chosen model trains on `train` + `val` and is measured on `test`."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max())) + 1


@dataclass
class Candidate:
    """One trial as the results table shows it."""

    number: int
    architecture: Architecture
    cost: Cost
    accuracy: float | None  # None: rejected (over a limit), not trained
    pareto: bool = False
    final: tuple[float, float] | None = None  # a finalist's cross-validated (accuracy, cross-entropy), full trainings

    @property
    def fits(self) -> bool:
        return self.accuracy is not None


@dataclass
class SearchResult:
    config: SearchConfig
    board: Board
    ram_limit: int
    flash_limit: int
    probe: BoardProbe
    study_name: str
    journal: Path
    candidates: list[Candidate] = field(default_factory=list)
    trained_now: int = 0  # trials trained by this run (the rest came from the journal)

    @property
    def chosen(self) -> Candidate:
        """The finalist best in cross-validation (mean accuracy, then cross-entropy, then cost); without finalists,
        the most accurate candidate on the Pareto front, on a tie the cheaper one."""
        finalists = [c for c in self.candidates if c.final is not None]
        if finalists:
            objective = self.config.objective
            return max(finalists, key=lambda c: (c.final[0], -c.final[1], -objective_value(c.cost, objective)))
        front = [c for c in self.candidates if c.pareto]
        return max(front, key=lambda c: (c.accuracy, -objective_value(c.cost, self.config.objective)))


def objective_value(cost: Cost, objective: str) -> int:
    return cost.instructions if objective == "instructions" and cost.instructions is not None else cost.macs


def load_data(config: SearchConfig) -> SearchData:
    """The example's image data, with a seeded stratified validation share cut from its training split."""
    from sklearn.model_selection import train_test_split

    try:
        module = importlib.import_module(f"tinyml.examples.{config.example}")
        x_train, y_train, x_test, y_test = module.load_data()
    except (ModuleNotFoundError, AttributeError):
        from tinyml.examples import list_examples

        raise RecipeError(
            f"search settings: example {config.example!r} is not a bundled example with image data (available: "
            f"{', '.join(list_examples())})."
        ) from None
    if x_train.ndim != 4 or x_train.shape[-1] != x_train.shape[-2]:
        raise DataError(
            f"search settings: example {config.example!r} has inputs shaped {list(x_train.shape[1:])}; the search "
            "space's convolutional blocks need square images (C, H, W)."
        )
    if config.train_samples is not None:
        x_train, y_train = x_train[: config.train_samples], y_train[: config.train_samples]
    x_fit, x_val, y_fit, y_val = train_test_split(
        x_train, y_train, test_size=VALIDATION_SHARE, random_state=config.seed, stratify=y_train
    )
    return SearchData(x_fit, y_fit, x_val, y_val, x_test, y_test)


def study_name(config: SearchConfig, board: Board, ram: int, flash: int, probe: BoardProbe) -> str:
    """A name fixed by everything that changes the trials' results, so a rerun resumes the same study and
    different settings start another one in the same journal."""
    outside_trials = {"trials", "executor", "workers", "final_epochs", "finalists", "finalist_folds"}
    settings = config.model_dump(exclude=outside_trials)
    key = json.dumps([settings, board.name, ram, flash, probe.stack_bytes, probe.code_bytes], sort_keys=True)
    return f"search-{board.name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def open_journal(path: Path) -> Any:
    """Optuna's journal storage in `path`; an existing file that is not an Optuna journal is refused."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = Path(path)
    if path.exists():
        first = path.read_text(errors="replace").split("\n", 1)[0] if path.is_file() else ""
        try:
            is_journal = "op_code" in json.loads(first)
        except ValueError:
            is_journal = False
        if not is_journal:
            raise TinymlError(
                f"The study journal {path} exists and is not an Optuna journal; tinyml appends to a journal of "
                "its own only, so give another --journal (or move that file)."
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def check_limits_reachable(config: SearchConfig, board: Board, probe: BoardProbe, ram: int, flash: int,
                           classes: int, in_channels: int) -> None:  # fmt: skip
    """Raise FitError when even the smallest candidates exceed the limits, with what the smallest needs."""
    costs = [(arch, candidate_cost(arch, board, probe)) for arch in smallest_candidates(config.space, in_channels,
                                                                                         classes)]  # fmt: skip
    if any(c.peak_ram <= ram and c.flash <= flash for _, c in costs):
        return
    arch, cost = min(costs, key=lambda pair: (pair[1].peak_ram, pair[1].flash))
    over = []
    if cost.peak_ram > ram:
        over.append(f"the RAM limit is {ram:,} bytes")
    if cost.flash > flash:
        over.append(f"the flash limit is {flash:,} bytes")
    raise FitError(
        f"No candidate of the search space fits on {board.name}: {' and '.join(over)}, but the smallest candidate "
        f"({arch.label()}) needs {cost.describe()}. Raise the limit (--ram/--flash), or let the space hold smaller "
        "candidates (lower space.resolutions or space.widths, fewer space.stages, depth 0 in space.depths)."
    )


def run_search(config: SearchConfig, journal: Path, progress: bool = True) -> SearchResult:
    """Run (or resume) the study until `config.trials` candidates are trained; every candidate with its cost."""
    import optuna

    from tinyml.board.boards import resolve_board
    from tinyml.progress import progress_bar

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    board = resolve_board(config.board)
    ram = config.ram or board.ram_bytes
    flash = config.flash or board.flash_bytes
    if config.objective == "instructions" and config.stack != "measured":
        raise RecipeError(
            "search settings: objective 'instructions' needs the instruction rates measured on the board, which "
            "comes with stack = 'measured'; drop the stack setting or use objective 'macs'."
        )
    data = load_data(config)
    in_channels = data.x_train.shape[1]
    probe = measure_probe(board) if config.stack == "measured" else given_probe(board, config.stack)
    check_limits_reachable(config, board, probe, ram, flash, data.classes, in_channels)
    name = study_name(config, board, ram, flash, probe)
    storage = open_journal(journal)
    sampler = optuna.samplers.NSGAIISampler(population_size=config.population, seed=config.seed)
    study = optuna.create_study(
        study_name=name, storage=storage, sampler=sampler, directions=["maximize", "minimize"], load_if_exists=True
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["accuracy", config.objective])
    result = SearchResult(config, board, ram, flash, probe, name, Path(journal))
    costs: dict[str, Cost] = {}
    scores: dict[str, float] = {}
    for trial in study.get_trials(deepcopy=False):
        if "cost" in trial.user_attrs:
            costs[trial.user_attrs["key"]] = Cost(**{k: v for k, v in trial.user_attrs["cost"].items()
                                                     if k in Cost.__dataclass_fields__})  # fmt: skip
        if trial.state == optuna.trial.TrialState.COMPLETE:
            scores[trial.user_attrs["key"]] = trial.values[0]
    done = len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)))
    draws_left = DRAWS_PER_TRIAL * max(config.trials - done, 0)
    bar = progress_bar(f"searching ({board.name}, RAM <= {ram:,} B)", config.trials) if progress else nullcontext()
    executor = make_executor(config.executor, config.workers) if done < config.trials else None
    try:
        with bar as advance:
            advance = advance or (lambda n=1, note=None: None)
            advance(done, note=_best_note(study, config.objective))
            while done < config.trials:
                batch: list[tuple[optuna.Trial, Architecture, Cost, str]] = []
                while len(batch) < min(config.workers, config.trials - done):
                    if draws_left == 0:
                        raise FitError(
                            f"The search drew {DRAWS_PER_TRIAL * config.trials} candidates but only {done} of "
                            f"them fit in {ram:,} bytes of RAM and {flash:,} of flash ({config.trials} were asked "
                            "for): raise the limits, lower --trials, or narrow the space to smaller candidates."
                        )
                    draws_left -= 1
                    trial = study.ask()
                    arch = from_params(suggest(trial, config.space), config.space, in_channels, data.classes)
                    key = json.dumps(arch.as_dict(), sort_keys=True)
                    if key not in costs:
                        costs[key] = candidate_cost(arch, board, probe)
                    cost = costs[key]
                    trial.set_user_attr("key", key)
                    trial.set_user_attr("label", arch.label())
                    trial.set_user_attr("cost", cost.as_dict())
                    if cost.peak_ram > ram or cost.flash > flash:
                        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                        continue
                    batch.append((trial, arch, cost, key))  # a repeat is told the score it already has
                fresh = {k: arch for _, arch, _, k in batch if k not in scores}
                tasks = [TrialTask(i, arch.as_dict(), config.epochs, config.seed, data.x_train, data.y_train,
                                   data.x_val, data.y_val) for i, arch in enumerate(fresh.values())]  # fmt: skip
                accuracies = executor.map(run_trial, tasks) if tasks else []
                scores.update(zip(fresh, accuracies, strict=True))
                result.trained_now += len(tasks)
                for trial, _arch, cost, key in batch:
                    study.tell(trial, [scores[key], objective_value(cost, config.objective)])
                    done += 1
                    advance(1, note=_best_note(study, config.objective))
        result.candidates = collect_candidates(study, config, in_channels, data.classes)
        executor = executor or make_executor(config.executor, config.workers)
        score_finalists(result, data, executor, progress)
    finally:
        if executor is not None:
            executor.close()
    return result


def score_finalists(result: SearchResult, data: SearchData, executor: Any, progress: bool) -> None:
    """Score the `finalists` most accurate candidates by `finalist_folds`-fold cross-validation over the training
    and validation data, each fold trained for `final_epochs`: mean validation accuracy and cross-entropy. The
    short trainings' accuracies on one validation split tie and rank noisily; every sample scores once here."""
    from sklearn.model_selection import StratifiedKFold

    from tinyml.progress import progress_bar

    config = result.config
    trained = [c for c in result.candidates if c.fits]
    ranked = sorted(trained, key=lambda c: (-c.accuracy, objective_value(c.cost, config.objective), c.number))
    finalists: list[Candidate] = []
    for candidate in ranked:  # a candidate drawn twice is one finalist
        if len(finalists) < config.finalists and all(f.architecture != candidate.architecture for f in finalists):
            finalists.append(candidate)
    x = np.concatenate([data.x_train, data.x_val])
    y = np.concatenate([data.y_train, data.y_val])
    folds = list(StratifiedKFold(config.finalist_folds, shuffle=True, random_state=config.seed).split(x, y))
    tasks = [TrialTask(c.number, c.architecture.as_dict(), config.final_epochs, config.seed, x[fit], y[fit], x[val],
                       y[val]) for c in finalists for fit, val in folds]  # fmt: skip
    scores: list[tuple[float, float]] = []
    bar = progress_bar(f"cross-validating the {len(finalists)} most accurate", len(tasks)) if progress \
        else nullcontext()  # fmt: skip
    with bar as advance:
        for start in range(0, len(tasks), config.workers):
            batch = tasks[start : start + config.workers]
            scores += executor.map(run_finalist, batch)
            if advance is not None:
                advance(len(batch))
    for i, candidate in enumerate(finalists):
        mine = scores[i * len(folds) : (i + 1) * len(folds)]
        candidate.final = (float(np.mean([a for a, _ in mine])), float(np.mean([loss for _, loss in mine])))


def _best_note(study: optuna.Study, objective: str) -> str:
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        return ""
    best = max(complete, key=lambda t: (t.values[0], -t.values[1]))
    return f"best {100 * best.values[0]:.1f}% ({best.user_attrs['label']}, {best.values[1]:,.0f} {objective})"


def collect_candidates(study: optuna.Study, config: SearchConfig, in_channels: int, classes: int) -> list[Candidate]:
    """Every finished trial of the study as a `Candidate`, the Pareto front marked."""
    import optuna

    front = {t.number for t in study.best_trials}
    found = []
    for trial in study.get_trials(deepcopy=False):
        if trial.state not in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED):
            continue
        arch = from_params(trial.params, config.space, in_channels, classes)
        cost = Cost(**{k: v for k, v in trial.user_attrs["cost"].items() if k in Cost.__dataclass_fields__})
        accuracy = trial.values[0] if trial.state == optuna.trial.TrialState.COMPLETE else None
        found.append(Candidate(trial.number, arch, cost, accuracy, trial.number in front))
    return found
