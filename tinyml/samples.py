"""Sample data a build reads (calibration, validation, training): read from .npz files and checked.

Every check names where the data came from (`what`: a recipe field with its command-line flag, or
"calibration data" for arrays passed from Python), so a bad file is one paragraph, not a traceback
from deep inside quantization or validation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tinyml.errors import DataError

_SAVE_HINT = "save the arrays with np.savez(path, x=inputs, y=labels)"


def load_samples(path: Path, field_name: str, labels_required: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Read `x` (N, C, H, W) or (N, F) float32 and integer labels `y` (optional unless `labels_required`)."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not an .npz file" if path.is_dir() else "does not exist"
        raise DataError(f"{field_name}: the file {path} {what}.")
    try:
        arrays = np.load(path, allow_pickle=False)
    except Exception as err:  # numpy raises ValueError, OSError, EOFError, BadZipFile, ... for a file it cannot read
        raise DataError(
            f"{field_name}: {path} is not an .npz file numpy can read ({_one_line(err)}); {_SAVE_HINT}."
        ) from err
    if not isinstance(arrays, np.lib.npyio.NpzFile):
        raise DataError(f"{field_name}: {path} holds a single array (an .npy file), not named arrays; {_SAVE_HINT}.")
    with arrays:
        if "x" not in arrays.files:
            raise DataError(f"{field_name}: {path} has no array `x` (found: {', '.join(arrays.files) or 'none'}).")
        try:
            x = np.asarray(arrays["x"], dtype=np.float32)
            y = np.asarray(arrays["y"]) if "y" in arrays.files else None
        except Exception as err:  # a truncated or damaged archive fails only when an array is read
            raise DataError(f"{field_name}: {path} is damaged or truncated ({_one_line(err)}); {_SAVE_HINT}.") from err
    x = check_samples(x, f"{field_name} file {path}")
    if y is None:
        if labels_required:
            raise DataError(
                f"{field_name}: {path} has no labels `y`: the array of integer class labels, one per sample of `x`, "
                f"that accuracy is measured against; {_SAVE_HINT}."
            )
        return x, None
    return x, check_labels(y, len(x), None, f"{field_name} file {path}")


def check_samples(x: Any, what: str, error: type[DataError] = DataError) -> np.ndarray:
    """`x` as a float32 batch shaped (N, C, H, W) or (N, F), non-empty and finite; else `error`."""
    if x is None:
        raise error(f"No {what} given: pass an array of samples shaped (N, C, H, W) or (N, F).")
    try:
        x = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise error(f"The {what} is not an array of numbers: {_one_line(err)}.") from err
    if x.ndim not in (2, 4) or len(x) == 0:
        raise error(f"The {what} must be a non-empty batch shaped (N, C, H, W) or (N, F); got shape {x.shape}.")
    bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    if bad.any():
        first = int(np.argmax(bad))
        raise error(
            f"The {what} holds NaN or infinite values in {int(bad.sum())} of {len(x)} samples (the first is sample "
            f"{first}); remove or repair those samples."
        )
    return x


def check_labels(y: Any, count: int, outputs: int | None, what: str) -> np.ndarray:
    """Integer class labels, one per sample, each an index into the model's `outputs` values (when known)."""
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != count or not np.issubdtype(y.dtype, np.integer):
        raise DataError(
            f"The {what}: `y` must hold one integer label per sample of `x` ({count}); got {y.dtype} shaped {y.shape}."
        )
    if outputs is not None and len(y) and (y.min() < 0 or y.max() >= outputs):
        wrong = y[(y < 0) | (y >= outputs)]
        raise DataError(
            f"The {what}: labels must be class indices from 0 to {outputs - 1} (the model has {outputs} outputs); "
            f"{len(wrong)} are not, e.g. {int(wrong[0])}."
        )
    return y


def check_sample_shape(x: np.ndarray, expected: tuple[int, ...], what: str, reference: str) -> None:
    """Samples must be shaped like the ones the model was exported with (without the batch axis)."""
    if tuple(x.shape[1:]) != tuple(expected):
        raise DataError(
            f"The {what} is shaped {list(x.shape[1:])} per sample but the model takes {list(expected)} (the shape "
            f"of the {reference}); give samples shaped like the model's input."
        )


def _one_line(err: BaseException) -> str:
    """An exception's message as one line, so the error stays one paragraph."""
    return " ".join(str(err).split())
