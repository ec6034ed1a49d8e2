"""SCons builder of the tinyml-arm platform: arm-none-eabi-gcc from PATH, the board's flags,
the runtime (startup, semihosting, counter) compiled in, and a linker script made from the
board's memory map (`build.tinyml` in the board JSON)."""

import os

from SCons.Script import AlwaysBuild, Default, DefaultEnvironment

env = DefaultEnvironment()
board = env.BoardConfig()
platform_dir = env.PioPlatform().get_dir()
runtime_dir = os.path.join(platform_dir, "runtime")
tinyml = board.get("build.tinyml")

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
    PROGSUFFIX=".elf",
    SIZEPROGREGEXP=r"^(?:\.isr_vector|\.text|\.rodata|\.ARM\.exidx|\.data)\s+(\d+).*",
    SIZEDATAREGEXP=r"^(?:\.data|\.bss)\s+(\d+).*",
    SIZECHECKCMD="$SIZETOOL -A -d $SOURCES",
    SIZEPRINTCMD="$SIZETOOL -B -d $SOURCES",
)

cpu_flags = list(tinyml["cflags"])
env.Append(
    ASFLAGS=cpu_flags + ["-x", "assembler-with-cpp"],
    CCFLAGS=cpu_flags + ["-ffunction-sections", "-fdata-sections", "-Wall", "-Wextra"],
    CFLAGS=["-std=c99"],
    CPPDEFINES=[
        "TML_COUNTER_" + tinyml["counter"].upper(),
        ("TML_INSTRUCTIONS_PER_TICK", tinyml["instructions_per_tick"]),
    ],
    CPPPATH=[runtime_dir],
    LINKFLAGS=cpu_flags + ["-nostartfiles", "--specs=nano.specs", "-Wl,--gc-sections"],
    LIBS=["c", "gcc"],
)


def render_linker_script():
    """Fill the linker script template with this board's memory map."""
    template_path = os.path.join(runtime_dir, "tinyml.ld.in")
    with open(template_path, encoding="utf-8") as template:
        text = template.read()
    for key in ("flash_origin", "flash_bytes", "ram_origin", "ram_bytes", "stack_reserve"):
        text = text.replace("@%s@" % key.upper(), "0x%08X" % int(tinyml[key]))
    build_dir = env.subst("$BUILD_DIR")
    os.makedirs(build_dir, exist_ok=True)
    path = os.path.join(build_dir, "tinyml.ld")
    with open(path, "w", encoding="utf-8") as out:
        out.write(text)
    return path


env.Replace(LDSCRIPT_PATH=render_linker_script())
env.BuildSources(os.path.join("$BUILD_DIR", "tinyml_runtime"), runtime_dir)

program = env.BuildProgram()
size = env.Alias("size", program, env.VerboseAction("$SIZEPRINTCMD", "Calculating size $SOURCE"))
AlwaysBuild(size)
Default([program])
