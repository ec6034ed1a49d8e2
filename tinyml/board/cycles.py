"""Estimated cycles for Cortex-M4 and Cortex-M7 from an exact instruction mix.

QEMU models no cycles. The instruction-count plugin gives, exactly, how many instructions of each
class ran (`MIX_CLASSES`) plus three facts that matter for timing: load/store-multiple
instructions, the words they move, and single loads/stores issued right after another one. This
module turns that mix into a cycle figure with a per-class cost table. The result is always an
*estimate*: it assumes zero wait-state memory, cannot tell taken from untaken branches, and ignores
interlocks; keep it labelled so (`ESTIMATE_LABEL`).

Cortex-M4, from the Cortex-M4 Technical Reference Manual (Arm 100166_0001_00, section 3.3.1,
Table 3-1, zero wait states):
  - data processing, SIMD add/subtract, extend, saturate: 1;
  - MUL, MLA, MLS, SMULL, SMLAL, SMLAD and the other DSP multiplies: 1;
  - SDIV, UDIV: 2 to 12 (early termination): charged 7, the middle;
  - LDR/STR (single): 2, but neighbouring single loads and stores pipeline their address and data
    phases so the second and later ones take 1 (the `pipelined` count takes 1 off each);
  - LDM, STM, PUSH, POP, LDRD, STRD: 1 + N (N registers);
  - B, BL, BX, CBZ, TBB ...: 1 + P, P (pipeline refill) 1 to 3: charged 1 + 2 for every branch,
    taken or not (the plugin does not see which); a POP that loads PC is counted as a load and
    pays no P.

Cortex-M7: its Technical Reference Manual (Arm DDI 0489) describes a six-stage dual-issue pipeline
with branch prediction and 64-bit memory interfaces but gives no per-instruction cycle table, so
these are throughput approximations, not Arm figures: two data-processing instructions per cycle
(0.5 each), one load or store per cycle (1), multiple transfers 1 + N/2 (two words per cycle),
multiplies 1 (one MAC pipeline), divides 7 as on the M4, predicted branches 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ESTIMATE_LABEL = "estimated"
MIX_CLASSES = ("loads", "stores", "multiplies", "divides", "branches", "other")
"""The instruction classes of the mix; every executed instruction is in exactly one."""
TIMING_FACTS = ("multiple", "multiple_words", "pipelined")
"""Extra counts the estimate needs: multiple transfers (within loads/stores), their words, pipelined singles."""


@dataclass(frozen=True)
class CoreTiming:
    """Cycles per instruction class on one core (see the module docstring for the sources)."""

    core: str
    single_transfer: float
    pipelined_saving: float
    multiple_base: float
    multiple_per_word: float
    multiply: float
    divide: float
    branch: float
    other: float
    source: str

    def cycles(self, counts: dict[str, int]) -> float:
        """Estimated cycles of a region from its mix and timing facts (keys MIX_CLASSES + TIMING_FACTS)."""
        singles = counts["loads"] + counts["stores"] - counts["multiple"]
        return (
            singles * self.single_transfer
            - counts["pipelined"] * self.pipelined_saving
            + counts["multiple"] * self.multiple_base
            + counts["multiple_words"] * self.multiple_per_word
            + counts["multiplies"] * self.multiply
            + counts["divides"] * self.divide
            + counts["branches"] * self.branch
            + counts["other"] * self.other
        )


CORTEX_M4 = CoreTiming(
    core="cortex-m4",
    single_transfer=2,
    pipelined_saving=1,
    multiple_base=1,
    multiple_per_word=1,
    multiply=1,
    divide=7,
    branch=3,
    other=1,
    source="Cortex-M4 TRM (Arm 100166_0001_00) Table 3-1, zero wait states; branches 1+P with P=2, divides 7",
)
CORTEX_M7 = CoreTiming(
    core="cortex-m7",
    single_transfer=1,
    pipelined_saving=0,
    multiple_base=1,
    multiple_per_word=0.5,
    multiply=1,
    divide=7,
    branch=1,
    other=0.5,
    source="approximation of the Cortex-M7 dual-issue pipeline (its TRM gives no cycle table)",
)
TIMINGS = (CORTEX_M4, CORTEX_M7)


def estimated_cycles(counts: dict[str, int]) -> dict[str, int]:
    """Estimated cycles of one region on each core of TIMINGS, rounded to whole cycles."""
    return {timing.core: round(timing.cycles(counts)) for timing in TIMINGS}


def timing_notes() -> dict[str, Any]:
    """What the estimate rests on, for a JSON report beside the figures."""
    return {"label": ESTIMATE_LABEL, "basis": {timing.core: timing.source for timing in TIMINGS}}
