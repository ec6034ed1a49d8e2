"""SCons builder of the tinyml-arm platform: compiles a project with the arm-none-eabi-gcc found
on PATH, using the CPU flags of the board JSON (`build.tinyml.cflags`) and the project's linker
script (`board_build.ldscript`). Release flags: the board JSON's optimisation level
(`build.tinyml.optimization`, -O2 unless the build asks for another), sections per function and
datum, unused ones dropped at link."""

from SCons.Script import AlwaysBuild, Default, DefaultEnvironment

env = DefaultEnvironment()
board = env.BoardConfig()
cpu_flags = list(board.get("build.tinyml.cflags"))
optimization = board.get("build.tinyml.optimization", "-O2")

env.Replace(
    AR="arm-none-eabi-gcc-ar",
    AS="arm-none-eabi-gcc",
    CC="arm-none-eabi-gcc",
    CXX="arm-none-eabi-g++",
    GDB="arm-none-eabi-gdb",
    OBJCOPY="arm-none-eabi-objcopy",
    RANLIB="arm-none-eabi-gcc-ranlib",
    SIZETOOL="arm-none-eabi-size",
    ARFLAGS=["rc"],
    PROGNAME="firmware",
    PROGSUFFIX=".elf",
    SIZEPROGREGEXP=r"^(?:\.isr_vector|\.text|\.rodata|\.ARM\.exidx|\.data)\s+(\d+).*",
    SIZEDATAREGEXP=r"^(?:\.data|\.bss)\s+(\d+).*",
    SIZECHECKCMD="$SIZETOOL -A -d $SOURCES",
    SIZEPRINTCMD="$SIZETOOL -B -d $SOURCES",
)
env.Append(
    ASFLAGS=cpu_flags + ["-x", "assembler-with-cpp"],
    CCFLAGS=cpu_flags + [optimization, "-ffunction-sections", "-fdata-sections", "-Wall", "-Wextra"],
    CFLAGS=["-std=c99"],
    LINKFLAGS=cpu_flags + ["-nostartfiles", "--specs=nano.specs", "-Wl,--gc-sections"],
    LIBS=["c", "gcc"],
)

program = env.BuildProgram()
size = env.Alias("size", program, env.VerboseAction("$SIZEPRINTCMD", "Calculating size $SOURCE"))
AlwaysBuild(size)
Default([program])
