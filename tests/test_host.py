"""The host build of generated C: its cache survives damage, and its errors are TinymlErrors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import tinyml.compiler as compiler
from tinyml import host
from tinyml.errors import BuildError

# Load a build in a fresh process (a process keeps an extension it loaded) and print its outputs.
RUN_MODEL = """
import sys
import numpy as np
from tinyml.host import load_model
model = load_model(sys.argv[1])
print(model(np.arange(-8, 8, dtype=np.int8).reshape(1, 16)).tolist())
"""


def run_in_fresh_process(build_dir: Path, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TINYML_CACHE_DIR": str(cache)}
    return subprocess.run(
        [sys.executable, "-c", RUN_MODEL, str(build_dir)], capture_output=True, text=True, env=env, timeout=600
    )


def test_a_damaged_cached_extension_is_rebuilt(tmp_path):
    torch.manual_seed(0)
    calib = np.random.default_rng(0).normal(size=(16, 16)).astype(np.float32)
    model = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4)).eval()
    build_dir = tmp_path / "build"
    compiler.compile(model, calib, out_dir=build_dir, progress=False)
    cache = tmp_path / "cache"

    first = run_in_fresh_process(build_dir, cache)
    assert first.returncode == 0, first.stderr
    (so,) = (cache / "host").glob("_tml_*/*.so")
    good_size = so.stat().st_size
    for damage in (so.read_bytes()[:4096], b"not an ELF file at all\n" * 10):
        so.write_bytes(damage)
        again = run_in_fresh_process(build_dir, cache)
        assert again.returncode == 0, again.stderr  # rebuilt, not "invalid ELF header" on every later run
        assert again.stdout == first.stdout
        (rebuilt,) = (cache / "host").glob("_tml_*/*.so")
        assert rebuilt.stat().st_size == good_size


def test_an_unwritable_cache_is_named(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should go")
    monkeypatch.setenv("TINYML_CACHE_DIR", str(blocker))
    with pytest.raises(BuildError, match="TINYML_CACHE_DIR"):
        host.build(cdef="int f(void);", source="int f(void) { return 1; }", sources=[], include_dirs=[])


def test_a_header_without_declarations_is_a_build_error(tmp_path):
    header = tmp_path / "plain.h"
    header.write_text("int f(void);\n")
    with pytest.raises(BuildError, match="cdef-begin"):
        host.header_cdef(header)


def test_a_folder_that_is_not_a_build_is_named(tmp_path):
    with pytest.raises(BuildError, match="model.h, model.c, model_data.c"):
        host.load_model(tmp_path)


def test_a_model_h_without_the_model_macros_is_named(tmp_path):
    for name in ("model.c", "model_data.c"):
        (tmp_path / name).write_text("/* empty */\n")
    (tmp_path / "model.h").write_text("#define TML_MODEL_INPUT_SIZE 16\n")
    with pytest.raises(BuildError, match="does not define TML_MODEL_OUTPUT_SIZE"):
        host.load_model(tmp_path)
