"""Output folders: written complete or not at all, and never a folder of the user's replaced.

A build writes into a hidden staging folder beside its output (``.<name>.tinyml-<pid>-<random>``)
and swaps it in only when complete. The output folder may be replaced only when it does not exist,
is empty, or is a folder an earlier tinyml build wrote (`tinyml.manifest.is_tinyml_build`);
anything else (a project folder, a folder holding the build's own inputs, a file) is an
`OutputDirError` that names the folder and what to do.

A symbolic link given as the output is never followed to delete: when it points at an empty folder
or an earlier tinyml build, the link itself is replaced by the new build and what it pointed to
is left as it was; a link to anything else (a user's folder, a file, nothing) is refused.
Staging folders of a process that no longer runs (a build killed with SIGKILL or a power cut)
are removed by the next build into the same parent folder.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tinyml.errors import OutputDirError
from tinyml.manifest import is_tinyml_build

_STAGING_NAME = re.compile(r"^\..+\.tinyml-(\d+)-[A-Za-z0-9_]+$")
_ADVICE = "choose another --out, or empty or remove the folder yourself if you mean to replace it"


def check_output_dir(out_dir: str | Path, inputs: Iterable[str | Path | None] = ()) -> Path:
    """The resolved output folder, after checking that a build may write it; else `OutputDirError`.

    `inputs` are the files the build reads (recipe, model file, weights, data): the output folder
    must not contain any of them, nor the current directory. Called before a build starts (so a
    mistake costs no compile time) and again just before the finished build is swapped in.
    """
    given = Path(out_dir)
    resolved = output_path(given)
    shown = str(given) if str(given) == str(resolved) else f"{given} ({resolved})"
    for ancestor in reversed(resolved.parents):
        if ancestor.exists() and not ancestor.is_dir():
            raise OutputDirError(f"The output folder {shown} cannot be created: {ancestor} is a file; {_ADVICE}.")
    if resolved.is_symlink():
        _check_link(resolved, shown)
    elif resolved.exists() and not resolved.is_dir():
        raise OutputDirError(f"The output folder {shown} is a file, not a folder; {_ADVICE}.")
    if resolved.is_dir() and not resolved.is_symlink():
        try:
            entries = sorted(p.name for p in resolved.iterdir())
        except OSError as err:
            reason = err.strerror or str(err)
            raise OutputDirError(f"The output folder {shown} cannot be read ({reason}); {_ADVICE}.") from err
        if entries and not is_tinyml_build(resolved):
            listed = ", ".join(entries[:3]) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")
            raise OutputDirError(
                f"The output folder {shown} holds files that no tinyml build wrote ({listed}); tinyml replaces only "
                f"an empty folder or an earlier build of its own (one with a manifest), so {_ADVICE}."
            )
    protected = [(Path(p), f"{p}, an input of this build") for p in inputs if p is not None]
    try:
        protected.append((Path.cwd(), "the current folder"))
    except OSError:
        pass  # the current folder no longer exists: nothing of it to protect
    for path, what in protected:
        if path.resolve().is_relative_to(resolved):
            raise OutputDirError(
                f"The output folder {shown} contains {what}, which replacing the folder would delete; "
                "choose another --out (or move that out of the folder)."
            )
    existing = next(p for p in resolved.parents if p.exists())  # the build is swapped in there
    if not os.access(existing, os.W_OK):
        raise OutputDirError(f"The output folder {shown} is not writable ({existing} is read-only); {_ADVICE}.")
    return resolved


def output_path(out_dir: str | Path) -> Path:
    """`out_dir` made absolute, links resolved in its parents but not in its last part (replaced, not followed)."""
    given = Path(out_dir)
    if given.name in ("", ".", ".."):
        return given.resolve()
    return given.parent.resolve() / given.name


def _check_link(link: Path, shown: str) -> None:
    """A link as output is replaced by the new build only when it points at an empty folder or an earlier build."""
    target = link.resolve()
    if not target.is_dir():
        raise OutputDirError(
            f"The output folder {shown} is a symbolic link to {target}, which is not a folder; remove the link "
            "yourself or choose another --out."
        )
    if any(target.iterdir()) and not is_tinyml_build(target):
        raise OutputDirError(
            f"The output folder {shown} is a symbolic link to {target}, a folder that no tinyml build wrote; tinyml "
            "replaces a link (never what it points to) only when it points at an empty folder or an earlier tinyml "
            f"build, so {_ADVICE}."
        )


def remove_stale_staging(parent: Path) -> list[Path]:
    """Remove the staging folders in `parent` whose process no longer runs; the removed paths."""
    removed = []
    try:
        entries = list(parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _STAGING_NAME.match(entry.name)
        if match and entry.is_dir() and not entry.is_symlink() and not _process_alive(int(match.group(1))):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists but belongs to someone else
    return True


def _new_staging(out_dir: Path) -> Path:
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tinyml-{os.getpid()}-", dir=out_dir.parent))
    umask = os.umask(0o022)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp makes it private; the build folder gets the usual permissions
    return staging


@contextmanager
def staged_directory(out_dir: Path, inputs: Iterable[str | Path | None] = ()) -> Iterator[Path]:
    """Yield an empty hidden sibling of `out_dir` to fill; on success it replaces `out_dir`.

    `out_dir` is checked with `check_output_dir` before and after. On any error, Ctrl-C or
    SIGTERM (which the `tinyml` command turns into an exception) the staging folder is removed and
    `out_dir` (an earlier good build) is left as it was, so a failed run never leaves a
    half-written folder that looks good.
    """
    inputs = list(inputs)
    out_dir = check_output_dir(out_dir, inputs)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(out_dir.parent)
        staging = _new_staging(out_dir)
    except OSError as err:
        reason = err.strerror or str(err)
        raise OutputDirError(f"The output folder {out_dir} cannot be written ({reason}); {_ADVICE}.") from err
    try:
        yield staging
        check_output_dir(out_dir, inputs)
        _swap_in(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _swap_in(staging: Path, out_dir: Path) -> None:
    """Put `staging` at `out_dir`: the old folder (or link) is moved aside first and deleted once the new one is in."""
    if not out_dir.exists() and not out_dir.is_symlink():
        staging.rename(out_dir)
        return
    trash = _new_staging(out_dir)  # named like a staging folder, so a kill here leaves nothing a later build keeps
    old = trash / "old"
    out_dir.rename(old)
    try:
        staging.rename(out_dir)
    except BaseException:
        old.rename(out_dir)
        raise
    finally:
        shutil.rmtree(trash, ignore_errors=True)
