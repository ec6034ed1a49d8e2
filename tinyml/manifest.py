"""The manifest of a build folder: what marks a folder as made by tinyml, and the one place that reads it.

Two kinds of folder carry one. `tinyml compile` writes a compiled model (`manifest.json`: the
layers, kernels and bytes of `Build.summary()`); `tinyml build` writes a firmware folder
(`firmware.json`: the board, the test inputs, the reference outputs). Every manifest starts with
the same three fields::

    "tinyml_build": "model" | "firmware"   the kind of folder; its presence marks the folder as tinyml's
    "manifest_version": 1                  MANIFEST_VERSION of the tinyml that wrote it
    "tinyml_version": "0.1.0"

and lists in `files` what the folder must hold besides the manifest. `read_manifest` is what
`tinyml validate`, `run`, `size` and `build` call before touching a folder: it says clearly when a
folder is not a build, is the other kind, is incomplete or comes from another version.
`is_tinyml_build` is the test for "a previous tinyml build made this folder", which decides
whether a build may replace an output folder.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from tinyml.errors import BuildFolderError

Kind = Literal["model", "firmware"]

MANIFEST_VERSION = 1
MARKER = "tinyml_build"
MANIFEST_FILES: dict[str, str] = {"model": "manifest.json", "firmware": "firmware.json"}
_RESERVED = (MARKER, "manifest_version", "tinyml_version", "files")
_REMEDY: dict[str, str] = {
    "model": "Compile the model again with `tinyml compile`.",
    "firmware": "Build the firmware again with `tinyml build --board NAME`.",
}
_WHAT: dict[str, str] = {"model": "a compiled model", "firmware": "a firmware folder"}
_WHERE: dict[str, str] = {
    "model": "Give a folder that `tinyml compile` wrote (build/<model name> by default).",
    "firmware": "Give a folder that `tinyml build --board NAME` wrote (build/<board> by default).",
}


def write_manifest(folder: str | Path, kind: Kind, content: Mapping[str, Any], files: Iterable[str]) -> Path:
    """Write the manifest of a `kind` build into `folder`: the marker fields, `files`, then `content`."""
    from tinyml import __version__

    clash = [key for key in content if key in _RESERVED]
    if clash:
        raise ValueError(f"manifest content may not use the reserved keys {clash}")
    document = {
        MARKER: kind,
        "manifest_version": MANIFEST_VERSION,
        "tinyml_version": __version__,
        "files": sorted(files),
        **content,
    }
    path = Path(folder) / MANIFEST_FILES[kind]
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def _load(path: Path) -> Any:
    """The JSON in `path`, or None when it cannot be read as JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def build_kind(path: str | Path) -> Kind | None:
    """ "model" or "firmware" when `path` is a folder a tinyml build made (of any version), else None."""
    path = Path(path)
    if not path.is_dir():
        return None
    for kind, name in MANIFEST_FILES.items():
        document = _load(path / name) if (path / name).is_file() else None
        if isinstance(document, dict) and document.get(MARKER) == kind:
            return kind  # type: ignore[return-value]
    return None


def is_tinyml_build(path: str | Path) -> bool:
    """Whether tinyml made the folder `path` (a compiled model or a firmware folder, any version).

    Only a manifest carrying tinyml's marker counts: a user's folder that merely holds a file
    called manifest.json is not a build, and neither is a damaged manifest. Builds from before
    the marker are recognised by the fields every such manifest had, so a new build may replace
    them (`make demo` run again after an upgrade).
    """
    return build_kind(path) is not None or _is_unmarked_build(Path(path))


# the fields every manifest written before MARKER existed had, by manifest file
_UNMARKED_FIELDS = {
    "manifest.json": {"techniques", "weight_bytes", "arena_bytes", "layers"},
    "firmware.json": {"board", "test_inputs", "defines", "model_sizes"},
}


def _is_unmarked_build(path: Path) -> bool:
    for name, fields in _UNMARKED_FIELDS.items():
        document = _load(path / name) if (path / name).is_file() else None
        if isinstance(document, dict) and MARKER not in document and fields <= document.keys():
            return True
    return False


def read_manifest(folder: str | Path, kind: Kind) -> dict[str, Any]:
    """The manifest of the `kind` build in `folder`, checked: a BuildFolderError says what is wrong and what to do."""
    folder = Path(folder)
    name = MANIFEST_FILES[kind]
    path = folder / name
    if not folder.is_dir():
        raise BuildFolderError(f"{folder} is not a folder, so it is not {_WHAT[kind]}. {_WHERE[kind]}")
    if not path.is_file():
        other = build_kind(folder)
        if other == "model":
            raise BuildFolderError(
                f"{folder} is a compiled model, not a firmware folder (it has {MANIFEST_FILES['model']}, no {name}). "
                "Build firmware with `tinyml build --board NAME` and give the folder it writes (build/<board>)."
            )
        if other == "firmware":
            raise BuildFolderError(
                f"{folder} is a firmware folder, not a compiled model; the model it was built from is in "
                f"{folder / 'model'}."
            )
        raise BuildFolderError(f"{folder} is not {_WHAT[kind]} made by tinyml (it has no {name}). {_WHERE[kind]}")
    document = _load(path)
    if not isinstance(document, dict):
        raise BuildFolderError(f"{path} is damaged (truncated or edited): it is not a JSON object. {_REMEDY[kind]}")
    if MARKER not in document:
        raise BuildFolderError(
            f"{path} has no {MARKER!r} field: the folder was made by an older tinyml or by something else. "
            f"{_REMEDY[kind]}"
        )
    if document[MARKER] != kind:
        raise BuildFolderError(f"{path} describes a {document[MARKER]!r} build, not {_WHAT[kind]}. {_REMEDY[kind]}")
    version = document.get("manifest_version")
    if version != MANIFEST_VERSION:
        newer = isinstance(version, int) and version > MANIFEST_VERSION
        raise BuildFolderError(
            f"{path} is manifest version {version!r}, written by tinyml {document.get('tinyml_version', '?')}; this "
            f"tinyml reads version {MANIFEST_VERSION}. "
            + ("Upgrade tinyml, or make the folder again with this version." if newer else _REMEDY[kind])
        )
    files = document.get("files", [])
    missing = [f for f in files if not (folder / f).exists()] if isinstance(files, list) else ["(files list damaged)"]
    if missing:
        raise BuildFolderError(f"{folder} is incomplete: {', '.join(map(str, missing))} missing. {_REMEDY[kind]}")
    return document
