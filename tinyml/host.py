"""Compile C for the host through cffi (API mode) and load it, cached by a content hash.

The same kernel sources that go onto a board are compiled here with the host's gcc, so tests and
`tinyml validate` run the real C. A second run with the same inputs loads the cached extension
instead of recompiling.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import cffi

FIRMWARE_DIR = Path(__file__).resolve().parent.parent / "firmware"
KERNEL_HEADER = FIRMWARE_DIR / "include" / "tml_nn.h"
HOST_CFLAGS = ("-std=c99", "-O2", "-Wall", "-Wextra", "-Werror=implicit-function-declaration")


def cache_dir() -> Path:
    """Where compiled extensions are kept: $TINYML_CACHE_DIR, else ~/.cache/tinyml/host."""
    root = os.environ.get("TINYML_CACHE_DIR") or Path.home() / ".cache" / "tinyml"
    return Path(root) / "host"


def header_cdef(header: Path) -> str:
    """The declarations between `/* cdef-begin */` and `/* cdef-end */` in a C header."""
    text = header.read_text()
    match = re.search(r"/\* cdef-begin \*/(.*?)/\* cdef-end \*/", text, re.S)
    if not match:
        raise ValueError(f"{header} has no /* cdef-begin */ ... /* cdef-end */ block")
    return match.group(1)


@dataclass
class HostLibrary:
    """A compiled extension: `ffi` to make buffers, `lib` to call the C functions."""

    ffi: cffi.FFI
    lib: object
    path: Path


def _digest(parts: list[bytes]) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "little"))
        h.update(p)
    return h.hexdigest()[:20]


def build(
    cdef: str,
    source: str,
    sources: list[Path],
    include_dirs: list[Path],
    define_macros: list[tuple[str, str]] | None = None,
) -> HostLibrary:
    """Compile `source` (the glue C that cffi wraps) with `sources` into an extension and load it.

    `cdef` declares what Python may call. The result is cached under `cache_dir()` keyed by
    every input's content, including the headers in `include_dirs`.
    """
    define_macros = define_macros or []
    headers = sorted(p for d in include_dirs for p in Path(d).rglob("*.h"))
    parts = [cdef.encode(), source.encode(), repr(define_macros).encode(), repr(HOST_CFLAGS).encode()]
    parts += [sys.version.encode(), sysconfig.get_platform().encode()]
    for path in sorted(Path(s) for s in sources) + headers:
        parts += [str(path.name).encode(), path.read_bytes()]
    name = f"_tml_{_digest(parts)}"
    out_dir = cache_dir() / name
    so = next(out_dir.glob(f"{name}*.so"), None) if out_dir.exists() else None
    if so is None:
        ffi = cffi.FFI()
        ffi.cdef(cdef)
        ffi.set_source(
            name,
            source,
            sources=[str(s) for s in sources],
            include_dirs=[str(d) for d in include_dirs],
            define_macros=define_macros,
            extra_compile_args=list(HOST_CFLAGS),
        )
        tmp = out_dir.with_name(f"{name}.tmp{os.getpid()}")
        tmp.mkdir(parents=True, exist_ok=True)
        built = Path(ffi.compile(tmpdir=str(tmp), verbose=False))
        out_dir.mkdir(parents=True, exist_ok=True)
        so = out_dir / built.name
        os.replace(built, so)  # atomic: a parallel run never sees half a file
        _remove_tree(tmp)
    return HostLibrary(*_load(name, so), path=so)


def _load(name: str, so: Path) -> tuple[cffi.FFI, object]:
    if name in sys.modules:
        module = sys.modules[name]
    else:
        spec = importlib.util.spec_from_file_location(name, so)
        assert spec and spec.loader
        module: ModuleType = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return module.ffi, module.lib


def _remove_tree(path: Path) -> None:
    for p in sorted(path.rglob("*"), reverse=True):
        p.rmdir() if p.is_dir() else p.unlink()
    path.rmdir()


def kernel_sources() -> list[Path]:
    """The portable kernel library's C files."""
    return sorted((FIRMWARE_DIR / "src").glob("*.c"))


def build_kernels(define_macros: list[tuple[str, str]] | None = None) -> HostLibrary:
    """The kernel library alone, callable from Python: what the kernel tests use."""
    return build(
        cdef=header_cdef(KERNEL_HEADER),
        source='#include "tml_nn.h"\n',
        sources=kernel_sources(),
        include_dirs=[FIRMWARE_DIR / "include"],
        define_macros=define_macros,
    )
