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


class BuildFolderError(TinymlError):
    """A folder is not a tinyml build, or was made by another version, or one of its files is damaged."""


class GraphFileError(BuildFolderError):
    """A build's graph file (graph.json with graph.npz) is missing, damaged, or of another format version."""


class InvalidElfError(BuildFolderError):
    """A firmware's ELF file is truncated or is not an ELF for an Arm core."""


class ReportError(TinymlError):
    """A folder holds no build to report on, or its report data cannot be read."""


class ModelInputError(TinymlError):
    """Data given to a compiled model does not fit its input (size or type)."""


class KernelError(TinymlError):
    """A kernel of a compiled model returned an error status; the message names the layer and the sample."""

    def __init__(self, message: str, layer: str | None, layer_index: int, sample: int, status: int) -> None:
        super().__init__(message)
        self.layer = layer
        self.layer_index = layer_index
        self.sample = sample
        self.status = status


class OutputDirError(TinymlError):
    """An output folder cannot be written, or holds something a build must not replace (the user's files)."""
