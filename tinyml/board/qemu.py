"""Run a firmware directory in QEMU and read back what the harness reported.

Instruction counts are exact on every board: QEMU loads our TCG plugin (`tinyml.board.icount`),
which counts each executed instruction between the harness's markers and sorts them into an
instruction mix, from which Cortex-M4 and Cortex-M7 cycles are *estimated* (`tinyml.board.cycles`).
The board's timer counts too, under `-icount shift=0` (one virtual nanosecond per instruction:
TIM2 at 1 GHz on `netduinoplus2` is exact, SysTick at 25 MHz on the MPS2 machines is good to 40
instructions); its figures stand when the plugin cannot be built or loaded, with the reason in
`instruction_count_note`. Two runs of the same firmware give the same counts either way.
Semihosting carries the harness's "TML ..." lines to stdout and its exit status to QEMU's.

When the firmware folder holds reference outputs (computed at build time by the numpy oracle from
the model's graph), the board's outputs are compared with them byte for byte.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tinyml.board.cycles import timing_notes
from tinyml.board.icount import PluginCounts, ReportIncomplete, build_plugin, find_markers, parse_report, plugin_option
from tinyml.board.project import ELF_NAME, manifest_board
from tinyml.board.size import check_elf
from tinyml.errors import BuildError, BuildFolderError, FirmwareError, FirmwareFault, FirmwareTimeout
from tinyml.manifest import read_manifest

QEMU = "qemu-system-arm"
EXIT_OK = 0
EXIT_MODEL_ERROR = 1
EXIT_FAULT = 3
EXIT_LOCKUP = 134  # QEMU's own exit when the core locks up (a fault inside the fault handler)


@dataclass
class RunResult:
    """What one QEMU run of the harness reported.

    `outputs` is int8 [N, output size], one row per test input; `instructions` the instructions
    of each `tml_model_invoke` (including its per-layer profiling calls, a few dozen instructions
    per layer); `layer_instructions` [N, layers] the same per layer (the cost of the profiling
    calls taken out); `instruction_resolution` how many instructions one count stands for (1 with
    the plugin, `instruction_source` "plugin"; the timer's tick otherwise, source "timer");
    `plugin_counts` the plugin's instruction mix (None without it); `timer_instructions` and
    `timer_layer_instructions` what the board's timer measured; `stack_bytes` the stack high-water
    mark of the whole run; `reference_outputs` what the numpy oracle computes for the same inputs
    (None when the firmware was built without a graph).
    """

    board: str
    machine: str
    outputs: np.ndarray
    instructions: np.ndarray
    layer_instructions: np.ndarray
    layer_names: list[str]
    stack_bytes: int
    exit_status: int
    instruction_resolution: int
    log: str
    reference_outputs: np.ndarray | None = None
    instruction_source: str = "timer"
    instruction_count_note: str | None = None
    plugin_counts: PluginCounts | None = None
    timer_instructions: np.ndarray | None = None
    timer_layer_instructions: np.ndarray | None = None

    def use_plugin_counts(self, counts: PluginCounts) -> None:
        """Make the plugin's exact counts the result's, keeping the timer's beside them."""
        self.timer_instructions, self.timer_layer_instructions = self.instructions, self.layer_instructions
        self.instructions, self.layer_instructions = counts.instructions, counts.layer_instructions
        self.plugin_counts = counts
        self.instruction_source = "plugin"
        self.instruction_resolution = 1
        self.instruction_count_note = None

    @property
    def outputs_match_reference(self) -> bool | None:
        """True when every output equals the reference byte for byte; None without a reference."""
        if self.reference_outputs is None:
            return None
        return not self.mismatches()

    def mismatches(self) -> list[dict[str, int]]:
        """One entry per input whose output differs from the reference: how many values, by how much."""
        if self.reference_outputs is None:
            return []
        found = []
        for k, (board, reference) in enumerate(zip(self.outputs, self.reference_outputs, strict=True)):
            differ = board != reference
            if differ.any():
                gap = np.abs(board.astype(np.int16) - reference.astype(np.int16))
                found.append(
                    {"input": k, "values_differing": int(differ.sum()), "max_difference": int(gap.max())}
                )
        return found

    def summary(self) -> dict[str, Any]:
        """Plain values for JSON and tables; the mix and estimated cycles only with the plugin's counts."""
        counts = self.plugin_counts
        layers = []
        for i, name in enumerate(self.layer_names):
            layer: dict[str, Any] = {"name": name, "instructions": self.layer_instructions[:, i].tolist()}
            if counts is not None:
                layer["instruction_mix"] = counts.mix(counts.layers[:, i])
                layer["estimated_cycles"] = {"label": "estimated", **counts.cycles(counts.layers[:, i])}
            layers.append(layer)
        summary: dict[str, Any] = {
            "board": self.board,
            "machine": self.machine,
            "inputs": len(self.outputs),
            "outputs": self.outputs.tolist(),
            "instructions": self.instructions.tolist(),
            "instruction_resolution": self.instruction_resolution,
            "instruction_source": self.instruction_source,
            "instruction_count_note": self.instruction_count_note,
        }
        if counts is not None:
            summary["instruction_mix"] = counts.mix(counts.invocations)
            summary["estimated_cycles"] = {**timing_notes(), **counts.cycles(counts.invocations)}
            summary["timer_instructions"] = np.asarray(self.timer_instructions).tolist()
        summary.update(
            {
                "layers": layers,
                "stack_bytes": self.stack_bytes,
                "exit_status": self.exit_status,
                "outputs_match_reference": self.outputs_match_reference,
                "mismatched_inputs": self.mismatches(),
            }
        )
        return summary


def qemu_command(machine: str, elf: Path, plugin: str | None = None) -> list[str]:
    """The QEMU command line: no display, semihosting console on stdout, one instruction per ns.

    `plugin` is the value of a `-plugin` option (see `icount.plugin_option`), or None for none.
    """
    return [*_bare_command(machine, elf), *(["-plugin", plugin] if plugin else [])]


def _bare_command(machine: str, elf: Path) -> list[str]:
    return [
        QEMU,
        "-M", machine,
        "-display", "none",
        "-monitor", "none",
        "-serial", "none",
        "-chardev", "stdio,id=console",
        "-semihosting-config", "enable=on,target=native,chardev=console",
        "-icount", "shift=0",
        "-kernel", str(elf),
    ]  # fmt: skip


def run_firmware(build_dir: str | Path, timeout: float = 60.0, exact: bool = True) -> RunResult:
    """Run `build_dir/firmware.elf` on the QEMU machine of its board and parse the harness output.

    With `exact` the instruction-count plugin counts (built on first use); when it cannot be built
    or loaded, or the firmware has no markers, the timer's counts stand and
    `instruction_count_note` says why. Raises FirmwareTimeout if QEMU has not exited after
    `timeout` seconds, FirmwareFault (with the registers) if the firmware faulted, FirmwareError
    for any other abnormal end.
    """
    with tempfile.TemporaryDirectory(prefix="tinyml-icount-") as tmp:
        return _run(Path(build_dir), timeout, Path(tmp) / "icount.txt" if exact else None)


def _plugin(elf: Path, report: Path) -> tuple[str | None, str | None]:
    """The `-plugin` option for this firmware, or None and the reason the timer's counts will stand."""
    markers = find_markers(elf)
    if markers is None:
        return None, (
            f"{elf} has no instruction-count markers (tml_mark_begin, tml_mark_end, tml_marks): it was built by "
            "an older tinyml; build it again for exact counts."
        )
    try:
        return plugin_option(build_plugin(), markers, report), None
    except BuildError as err:
        return None, str(err)


def _run(build_dir: Path, timeout: float, report: Path | None) -> RunResult:
    build_dir = Path(build_dir)
    manifest = read_manifest(build_dir, "firmware")
    board = manifest_board(manifest)
    check_elf(build_dir / ELF_NAME)
    reference = _reference(build_dir, manifest)
    if shutil.which(QEMU) is None:
        raise FirmwareError(
            f"{QEMU} is not installed: install Debian's `qemu-system-arm` "
            "(apt-get install --no-install-recommends qemu-system-arm)."
        )
    elf = build_dir / ELF_NAME
    plugin, note = _plugin(elf, report) if report is not None else (None, "exact counts were not asked for")
    completed = _qemu(qemu_command(board.qemu_machine, elf, plugin), timeout, build_dir, board.name, board.qemu_machine)
    if plugin is not None and report is not None and not report.exists():
        # QEMU refused the plugin before the firmware started: run again on the timer alone
        note = (
            f"QEMU did not load the instruction-count plugin ({completed.stderr.strip()[-300:] or 'no message'}); "
            "the counts are the board timer's."
        )
        plugin = None
        completed = _qemu(qemu_command(board.qemu_machine, elf), timeout, build_dir, board.name, board.qemu_machine)
    log = completed.stdout
    status = completed.returncode
    if status == EXIT_FAULT:
        registers = parse_fault(log)
        if registers:
            shown = " ".join(f"{k}={v:#010x}" for k, v in registers.items() if k != "exception")
            raise FirmwareFault(
                f"The firmware in {build_dir} faulted on QEMU {board.qemu_machine} (board {board.name}), "
                f"exception {registers.get('exception')}: {shown}. Look up pc in the ELF "
                f"(arm-none-eabi-addr2line -e {build_dir / ELF_NAME} <pc>).",
                registers,
            )
    if status == EXIT_LOCKUP:
        raise FirmwareFault(
            f"The core locked up on QEMU {board.qemu_machine} (board {board.name}): a fault happened while "
            "handling a fault, so no registers could be printed.",
            {},
        )
    if status not in (EXIT_OK, EXIT_MODEL_ERROR):
        raise FirmwareError(
            f"QEMU {board.qemu_machine} ended with status {status} running {build_dir / ELF_NAME}. "
            f"stderr: {completed.stderr.strip()[-500:] or 'empty'}"
        )
    result = parse_output(log, board.name, board.qemu_machine, status, board.instructions_per_tick)
    result.instruction_count_note = note
    if plugin is not None and report is not None:
        try:
            result.use_plugin_counts(parse_report(report.read_text(), len(result.outputs), len(result.layer_names)))
        except (OSError, ReportIncomplete) as err:
            result.instruction_count_note = (
                f"the instruction-count plugin's report was not usable ({err}); the counts are the board timer's."
            )
    if status == EXIT_MODEL_ERROR:
        raise FirmwareError(_model_error_message(_status_line(log), result.layer_names, board.name))
    if reference is not None and reference.shape != result.outputs.shape:
        raise BuildFolderError(
            f"The reference outputs in {build_dir} are shaped {reference.shape} but the board gave "
            f"{result.outputs.shape}: the folder was changed after it was built. Build the firmware again."
        )
    result.reference_outputs = reference
    return result


def _qemu(command: list[str], timeout: float, build_dir: Path, board: str, machine: str) -> subprocess.CompletedProcess:
    """Run QEMU under a timeout; a firmware that does not exit in time is a FirmwareTimeout."""
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as expired:
        shown = _text(expired.stdout).strip().splitlines()[-5:]
        raise FirmwareTimeout(
            f"The firmware in {build_dir} did not exit within {timeout:g} s on QEMU {machine} "
            f"(board {board}); it hangs or needs a longer --timeout. Last output: {shown or 'none'}."
        ) from None


def _reference(build_dir: Path, manifest: dict[str, Any]) -> np.ndarray | None:
    """The reference outputs the manifest names, or None when the firmware was built without them."""
    name = manifest.get("reference_outputs")
    if name is None:
        return None
    path = build_dir / str(name)
    try:
        reference = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise BuildFolderError(
            f"{path} (the outputs the board must give) cannot be read ({err}). Build the firmware again with "
            "`tinyml build --board NAME`."
        ) from err
    if reference.dtype != np.int8 or reference.ndim != 2:
        raise BuildFolderError(
            f"{path} holds {reference.dtype} values shaped {reference.shape}, not the int8 rows tinyml wrote. "
            "Build the firmware again with `tinyml build --board NAME`."
        )
    return reference


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _status_line(log: str) -> str:
    return next((line for line in log.splitlines() if line.startswith("TML status")), "none")


def _model_error_message(status_line: str, layer_names: list[str], board: str) -> str:
    """Which layer failed on which input, from "TML status <s> layer=<i> sample=<k>" and the layer names."""
    words = status_line.split()
    fields = dict(item.split("=", 1) for item in words[3:] if "=" in item)
    status = words[2] if len(words) > 2 else "?"
    layer = int(fields.get("layer", -1)) if fields.get("layer", "").lstrip("-").isdigit() else -1
    if 0 <= layer < len(layer_names):
        where = f"in layer {layer} `{layer_names[layer]}`"
    else:
        where = "in an unknown layer"
    sample = f" on test input {fields['sample']}" if "sample" in fields else ""
    return (
        f"tml_model_invoke returned {status} {where}{sample} on board {board}: that layer's kernel rejected its "
        "parameters or shapes. The comment above its call in model.c shows what it was given."
    )


def parse_fault(log: str) -> dict[str, int]:
    """The registers of a "TML fault key=value ..." line (empty if there is none)."""
    for line in log.splitlines():
        if line.startswith("TML fault "):
            pairs = (item.split("=", 1) for item in line.split()[2:] if "=" in item)
            return {key: int(value, 0) for key, value in pairs}
    return {}


def parse_output(log: str, board: str, machine: str, status: int, resolution: int) -> RunResult:
    """Turn the harness's "TML ..." lines into a RunResult; a truncated report is an error."""
    header: dict[str, int] = {}
    names: dict[int, str] = {}
    outputs: dict[int, list[int]] = {}
    totals: dict[int, int] = {}
    layers: dict[int, list[int]] = {}
    stack = -1
    for line in log.splitlines():
        words = line.split()
        if len(words) < 2 or words[0] != "TML":
            continue
        tag, rest = words[1], words[2:]
        if tag == "model":
            header = {key: int(value) for key, value in (item.split("=", 1) for item in rest)}
        elif tag == "layer":
            names[int(rest[0])] = " ".join(rest[1:])
        elif tag == "output":
            outputs[int(rest[0])] = [int(v) for v in rest[1:]]
        elif tag == "instructions":
            totals[int(rest[0])] = int(rest[1])
        elif tag == "layer_instructions":
            layers[int(rest[0])] = [int(v) for v in rest[1:]]
        elif tag == "stack":
            stack = int(rest[0])
    count = header.get("inputs", -1)
    if status == EXIT_OK and (count < 0 or len(outputs) != count or stack < 0):
        raise FirmwareError(
            f"The harness report from board {board} is incomplete (expected {count} outputs, got "
            f"{len(outputs)}); first lines: {log.strip().splitlines()[:5]}"
        )
    done = sorted(outputs)
    return RunResult(
        board=board,
        machine=machine,
        outputs=np.array([outputs[k] for k in done], dtype=np.int8).reshape(len(done), header.get("output_size", 0)),
        instructions=np.array([totals[k] for k in done], dtype=np.int64),
        layer_instructions=np.array([layers[k] for k in done], dtype=np.int64).reshape(len(done), len(names)),
        layer_names=[names[i] for i in sorted(names)],
        stack_bytes=stack,
        exit_status=status,
        instruction_resolution=resolution,
        log=log,
    )
