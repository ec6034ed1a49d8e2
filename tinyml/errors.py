"""Errors a user meets. Each says what is wrong, where, and what to do; the CLI prints them without a traceback."""

from __future__ import annotations


class TinymlError(Exception):
    """Base of every error tinyml reports to a user."""


class UnsupportedOpError(TinymlError):
    """A model uses an operation the toolkit cannot compile."""

    def __init__(self, op: str, module_path: str, detail: str = "") -> None:
        self.op = op
        self.module_path = module_path
        where = f"`{module_path}`" if module_path else "the model's top level"
        message = f"Unsupported operation {op} at {where}."
        if detail:
            message += f" {detail}"
        super().__init__(message)


class DataError(TinymlError):
    """Data (calibration, validation, training; a file or arrays) is unreadable or does not fit the model."""


class CalibrationError(DataError):
    """Calibration data is missing or does not match the model."""


class RecipeError(TinymlError):
    """A recipe (tinyml.toml) or a technique option is malformed; the message points at the field."""


class BuildError(TinymlError):
    """Compiling the generated C failed (on the host or for a board)."""


class PluginError(TinymlError):
    """Plugins disagree (two offer the same name) or one returns something that is not what the hook asks."""


class BoardError(TinymlError):
    """A board name is unknown or a board file is malformed."""


class FitError(TinymlError):
    """The model does not fit the board's flash or RAM."""


class FirmwareError(TinymlError):
    """The firmware did not run to a normal end in QEMU."""


class FirmwareFault(FirmwareError):
    """The firmware took a fault; `registers` holds what the fault handler printed."""

    def __init__(self, message: str, registers: dict[str, int]) -> None:
        super().__init__(message)
        self.registers = registers


class FirmwareTimeout(FirmwareError):
    """The firmware did not exit within the time limit (a hang, or a timeout set too short)."""


class OutputDirError(TinymlError):
    """An output folder cannot be written, or holds something a build must not replace (the user's files)."""
