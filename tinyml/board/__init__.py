"""Everything about a board: its definition, the fit check, the PlatformIO project, ELF sizes, QEMU.

`boards` reads the board files, `fit` checks a compiled model against a board's flash and RAM,
`project` writes and builds the PlatformIO project (through `platformio`, offline), `size` reads
the ELF, `qemu` runs it, and `cli` holds the commands `boards`, `build`, `run` and `size`.
"""
