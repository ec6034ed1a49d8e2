"""Compile C for the host through cffi (API mode) and load it, cached by a content hash.

The same kernel sources that go onto a board are compiled here with the host's gcc, so tests and
`tinyml validate` run the real C. A second run with the same inputs loads the cached extension
instead of recompiling; a cached extension that no longer loads (truncated, overwritten) is
compiled again. Every error a user can meet here is a `TinymlError`.
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

from tinyml.errors import BuildError, KernelError, ModelInputError
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
        raise BuildError(f"{header} has no /* cdef-begin */ ... /* cdef-end */ block to declare its functions.")
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
    if so is not None and (name in sys.modules or _intact(so)):
        try:
            return HostLibrary(*_load(name, so), path=so)
        except _LOAD_ERRORS:
            pass  # damaged in a way its checksum did not show: build it again
    so = _compile(name, out_dir, cdef, source, sources, include_dirs, define_macros)
    try:
        return HostLibrary(*_load(name, so), path=so)
    except _LOAD_ERRORS as err:
        raise BuildError(f"The host build {so} was compiled but cannot be loaded: {err}") from None


# What loading a damaged extension raises: the dynamic loader's message, or a module without cffi's names.
_LOAD_ERRORS = (ImportError, OSError, AttributeError)


def _checksum_file(so: Path) -> Path:
    return so.with_name(so.name + ".sha256")


def _intact(so: Path) -> bool:
    """Whether a cached extension is byte for byte what was built (its checksum, written beside it, agrees).

    A truncated or overwritten extension must not reach the dynamic loader: mapping a truncated
    file kills the process with SIGBUS, which no exception handler sees.
    """
    try:
        return _checksum_file(so).read_text().strip() == hashlib.sha256(so.read_bytes()).hexdigest()
    except OSError:
        return False


def _compile(
    name: str,
    out_dir: Path,
    cdef: str,
    source: str,
    sources: list[Path],
    include_dirs: list[Path],
    define_macros: list[tuple[str, str]],
) -> Path:
    """Compile the extension in a private folder, then move it into `out_dir` in one step."""
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
    try:
        tmp.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise BuildError(
            f"Cannot write the host build cache {out_dir.parent} ({err.strerror}); set TINYML_CACHE_DIR to a "
            "writable folder."
        ) from None
    try:
        built = Path(ffi.compile(tmpdir=str(tmp), verbose=False))
        out_dir.mkdir(parents=True, exist_ok=True)
        so = out_dir / built.name
        digest = tmp / "checksum"
        digest.write_text(hashlib.sha256(built.read_bytes()).hexdigest() + "\n")
        os.replace(digest, _checksum_file(so))  # first, so that a half-replaced pair reads as damaged
        os.replace(built, so)  # atomic: a parallel run never sees half a file
    except (cffi.VerificationError, OSError) as err:
        raise BuildError(
            f"Compiling for the host failed ({', '.join(Path(s).name for s in sources) or 'glue code'}); "
            f"the compiler's messages are above. {err}"
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return so


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


MODEL_CDEF = """
int tml_model_invoke(const int8_t *in, int8_t *out);
extern int tml_model_failed_layer;
extern const char *const tml_model_layer_names[];
"""
MODEL_SOURCES = ("model.c", "model_data.c")


def model_macros(model_h: Path) -> dict[str, float]:
    """The numeric `#define TML_MODEL_*` values of a generated model.h."""
    macros = {}
    for name, value in re.findall(r"#define (TML_MODEL_\w+) (-?[\d.e+-]+)f?\n", model_h.read_text()):
        try:
            macros[name] = float(value) if any(c in value for c in ".e") else int(value)
        except ValueError:
            continue  # not a number after all: reported as missing where it is needed
    return macros


MODEL_MACROS = (
    "TML_MODEL_INPUT_SIZE",
    "TML_MODEL_OUTPUT_SIZE",
    "TML_MODEL_INPUT_SCALE",
    "TML_MODEL_INPUT_ZERO_POINT",
    "TML_MODEL_OUTPUT_SCALE",
    "TML_MODEL_OUTPUT_ZERO_POINT",
    "TML_MODEL_ARENA_BYTES",
    "TML_MODEL_LAYER_COUNT",
)


class HostModel:
    """A generated model compiled for the host: call it on a batch of int8 inputs.

    `model(x)` takes int8 inputs shaped (N, TML_MODEL_INPUT_SIZE) or (N, H, W, C) and returns int8
    outputs shaped (N, TML_MODEL_OUTPUT_SIZE). `quantize` and `dequantize` convert float data
    with the model's input and output scales. A kernel that returns an error raises KernelError
    naming the layer and the sample.
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
        count = int(macros["TML_MODEL_LAYER_COUNT"])
        ffi, lib = library.ffi, library.lib
        self.layer_names = [ffi.string(lib.tml_model_layer_names[i]).decode(errors="replace") for i in range(count)]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = self._int8_batch(x)
        out = np.zeros((len(x), self.output_size), dtype=np.int8)
        ffi, lib = self.library.ffi, self.library.lib
        for i in range(len(x)):
            status = lib.tml_model_invoke(ffi.from_buffer("int8_t[]", x[i]), ffi.from_buffer("int8_t[]", out[i]))
            if status != 0:
                raise self._kernel_error(int(status), int(lib.tml_model_failed_layer), i)
        return out

    def _int8_batch(self, x: np.ndarray) -> np.ndarray:
        """`x` as a contiguous int8 (N, input size) array, or ModelInputError saying what is wrong with it."""
        try:
            x = np.asarray(x)
        except (ValueError, TypeError) as err:
            raise ModelInputError(f"The model in {self.build_dir} takes an int8 array; got {err}.") from None
        if x.dtype != np.int8:
            if not np.issubdtype(x.dtype, np.integer):
                raise ModelInputError(
                    f"The model in {self.build_dir} takes int8 inputs, got {x.dtype} data; quantize float "
                    "data first with model.quantize(x)."
                )
            if x.size and (x.min() < -128 or x.max() > 127):
                raise ModelInputError(
                    f"The model in {self.build_dir} takes int8 inputs, got values in [{x.min()}, {x.max()}]."
                )
        if x.ndim == 0 or x.size % self.input_size or (x.ndim > 1 and x[0].size != self.input_size):
            raise ModelInputError(
                f"The model in {self.build_dir} takes samples of {self.input_size} int8 values, shaped "
                f"(N, {self.input_size}) or (N, H, W, C); got an array of shape {x.shape}."
            )
        return np.ascontiguousarray(x.astype(np.int8, copy=False).reshape(-1, self.input_size))

    def _kernel_error(self, status: int, layer_index: int, sample: int) -> KernelError:
        if 0 <= layer_index < len(self.layer_names):
            layer = self.layer_names[layer_index]
            where = f"in layer {layer_index} `{layer}`"
        else:
            layer, where = None, "in an unknown layer"
        return KernelError(
            f"tml_model_invoke returned {status} {where} on sample {sample} (model in {self.build_dir}): that "
            "layer's kernel rejected its parameters or shapes. The comment above its call in model.c shows what "
            "it was given.",
            layer,
            layer_index,
            sample,
            status,
        )

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
    macros = model_macros(build_dir / "model.h")
    absent = [name for name in MODEL_MACROS if name not in macros]
    if absent:
        raise BuildError(
            f"{build_dir / 'model.h'} does not define {', '.join(absent)} as numbers: it is not a model.h that "
            "`tinyml compile` wrote (or it was edited)."
        )
    kernel_dirs = plugins.kernel_source_dirs()
    sources = [build_dir / f for f in MODEL_SOURCES] + sorted(p for d in kernel_dirs for p in (d / "src").glob("*.c"))
    library = build(
        cdef=MODEL_CDEF,
        source='#include "model.h"\n',
        sources=sources,
        include_dirs=[build_dir, *[d / "include" for d in kernel_dirs]],
    )
    return HostModel(build_dir, library, macros)
