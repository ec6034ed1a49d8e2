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
import shutil
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import cffi
import numpy as np

from tinyml.errors import BuildError
from tinyml.resources import KERNEL_HEADER

CDEF_BEGIN = "/* cdef-begin */"
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
        try:
            built = Path(ffi.compile(tmpdir=str(tmp), verbose=False))
        except (cffi.VerificationError, OSError) as err:
            shutil.rmtree(tmp, ignore_errors=True)
            raise BuildError(
                f"Compiling for the host failed ({', '.join(Path(s).name for s in sources) or 'glue code'}); "
                f"the compiler's messages are above. {err}"
            ) from None
        out_dir.mkdir(parents=True, exist_ok=True)
        so = out_dir / built.name
        os.replace(built, so)  # atomic: a parallel run never sees half a file
        shutil.rmtree(tmp, ignore_errors=True)
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


def kernel_sources() -> list[Path]:
    """The C files of every kernel library the plugins give (`tinyml_kernel_sources`): the core's and theirs."""
    from tinyml import plugins

    return sorted(p for d in plugins.kernel_source_dirs() for p in (d / "src").glob("*.c"))


def build_kernels(define_macros: list[tuple[str, str]] | None = None) -> HostLibrary:
    """Every kernel library, callable from Python: what the kernel tests use.

    The core library and each plugin's C (from `tinyml_kernel_sources`) are compiled together, as
    on a board; a header's declarations between `/* cdef-begin */` and `/* cdef-end */` are callable.
    """
    from tinyml import plugins

    include_dirs = [d / "include" for d in plugins.kernel_source_dirs() if (d / "include").is_dir()]
    headers = [KERNEL_HEADER] + [
        h for d in include_dirs for h in sorted(d.glob("*.h")) if h != KERNEL_HEADER and CDEF_BEGIN in h.read_text()
    ]
    return build(
        cdef="\n".join(header_cdef(h) for h in headers),
        source="".join(f'#include "{h.name}"\n' for h in headers),
        sources=kernel_sources(),
        include_dirs=include_dirs,
        define_macros=define_macros,
    )


MODEL_CDEF = "int tml_model_invoke(const int8_t *in, int8_t *out);"
MODEL_SOURCES = ("model.c", "model_data.c")


def model_macros(model_h: Path) -> dict[str, float]:
    """The numeric `#define TML_MODEL_*` values of a generated model.h."""
    macros = {}
    for name, value in re.findall(r"#define (TML_MODEL_\w+) (-?[\d.e+-]+)f?\n", model_h.read_text()):
        macros[name] = float(value) if any(c in value for c in ".e") else int(value)
    return macros


class HostModel:
    """A generated model compiled for the host: call it on a batch of int8 inputs.

    `model(x)` takes int8 inputs shaped (N, TML_MODEL_INPUT_SIZE) or (N, H, W, C) and returns int8
    outputs shaped (N, TML_MODEL_OUTPUT_SIZE). `quantize` and `dequantize` convert float data
    with the model's input and output scales.
    """

    def __init__(self, build_dir: Path, library: HostLibrary, macros: dict[str, float]) -> None:
        self.build_dir = build_dir
        self.library = library
        self.input_size = int(macros["TML_MODEL_INPUT_SIZE"])
        self.output_size = int(macros["TML_MODEL_OUTPUT_SIZE"])
        self.input_scale = float(macros["TML_MODEL_INPUT_SCALE"])
        self.input_zero_point = int(macros["TML_MODEL_INPUT_ZERO_POINT"])
        self.output_scale = float(macros["TML_MODEL_OUTPUT_SCALE"])
        self.output_zero_point = int(macros["TML_MODEL_OUTPUT_ZERO_POINT"])
        self.arena_bytes = int(macros["TML_MODEL_ARENA_BYTES"])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(np.asarray(x, dtype=np.int8).reshape(-1, self.input_size))
        out = np.zeros((len(x), self.output_size), dtype=np.int8)
        ffi, lib = self.library.ffi, self.library.lib
        for i in range(len(x)):
            status = lib.tml_model_invoke(ffi.from_buffer("int8_t[]", x[i]), ffi.from_buffer("int8_t[]", out[i]))
            if status != 0:
                raise RuntimeError(f"tml_model_invoke returned {status} on sample {i}")
        return out

    def quantize(self, x: np.ndarray) -> np.ndarray:
        from tinyml.numbers import quantize_tensor

        return quantize_tensor(x, self.input_scale, self.input_zero_point)

    def dequantize(self, y: np.ndarray) -> np.ndarray:
        from tinyml.numbers import dequantize_tensor

        return dequantize_tensor(y, self.output_scale, self.output_zero_point)


def load_model(build_dir: str | Path) -> HostModel:
    """Compile a build directory's model.c and model_data.c with the kernel library, through cffi."""
    from tinyml import plugins

    build_dir = Path(build_dir).resolve()
    missing = [f for f in ("model.h", *MODEL_SOURCES) if not (build_dir / f).exists()]
    if missing:
        raise BuildError(f"{build_dir} has no {', '.join(missing)}: is it a `tinyml compile` output directory?")
    kernel_dirs = [Path(d) for dirs in plugins.plugin_manager().hook.tinyml_kernel_sources() for d in dirs]
    sources = [build_dir / f for f in MODEL_SOURCES] + sorted(p for d in kernel_dirs for p in (d / "src").glob("*.c"))
    library = build(
        cdef=MODEL_CDEF,
        source='#include "model.h"\n',
        sources=sources,
        include_dirs=[build_dir, *[d / "include" for d in kernel_dirs]],
    )
    return HostModel(build_dir, library, model_macros(build_dir / "model.h"))
