/*
 * tml_icount.c - a QEMU TCG plugin that counts the guest instructions executed between the
 * harness's markers, exactly, and sorts them into an instruction mix.
 *
 * Each translated Thumb instruction gets one inline add (QEMU_PLUGIN_INLINE_ADD_U64) on the
 * counter of its class, decided from its encoding at translation time. Inline adds run before
 * each instruction, so a translation block left early (an exception, an I/O access that makes
 * QEMU re-execute the rest) counts only what ran: the totals are exact and repeatable.
 *
 * Markers: the firmware's tml_mark_begin(&tml_marks[i]) and tml_mark_end(&tml_marks[i]) store one
 * byte; the plugin watches stores made by code inside those two functions only, and the address
 * written says which slot. At each end marker it writes one line to the output file:
 *
 *   TMLI classes <name> ...            once, first: the column names
 *   TMLI end <slot> <count> ...        per end marker: each counter's growth since that slot's begin
 *   TMLI exit                          when QEMU exits, so that a truncated report can be told apart
 *
 * Arguments (-plugin tml_icount.so,key=value,...): begin=, begin_size=, end=, end_size= (address and
 * byte size of the two marker functions), marks=, marks_size= (address and size of the slot array),
 * out= (the report file).
 *
 * Debian ships no qemu-plugin.h, so the few API types and functions used (plugin API version 1,
 * QEMU 7.2) are declared below. No GLib is needed.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the QEMU plugin API, as much of it as this plugin uses ---- */

#define TML_EXPORT __attribute__((visibility("default")))

typedef uint64_t qemu_plugin_id_t;
typedef uint32_t qemu_plugin_meminfo_t;
typedef struct qemu_info_t qemu_info_t; /* only passed through */
struct qemu_plugin_tb;
struct qemu_plugin_insn;

enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_CB_R_REGS, QEMU_PLUGIN_CB_RW_REGS };
enum qemu_plugin_mem_rw { QEMU_PLUGIN_MEM_R = 1, QEMU_PLUGIN_MEM_W, QEMU_PLUGIN_MEM_RW };
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };

typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_vcpu_mem_cb_t)(unsigned int vcpu_index, qemu_plugin_meminfo_t info, uint64_t vaddr,
                                          void *userdata);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t index);
const void *qemu_plugin_insn_data(const struct qemu_plugin_insn *insn);
size_t qemu_plugin_insn_size(const struct qemu_plugin_insn *insn);
uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *insn);
void qemu_plugin_register_vcpu_insn_exec_inline(struct qemu_plugin_insn *insn, enum qemu_plugin_op op, void *ptr,
                                                uint64_t imm);
void qemu_plugin_register_vcpu_mem_cb(struct qemu_plugin_insn *insn, qemu_plugin_vcpu_mem_cb_t cb,
                                      enum qemu_plugin_cb_flags flags, enum qemu_plugin_mem_rw rw, void *userdata);
void qemu_plugin_outs(const char *text);

TML_EXPORT int qemu_plugin_version = 1;

/* ---- counters ---- */

/*
 * The first CLASS_COUNT counters partition the instructions (they sum to the total); the others
 * are extra facts for the cycle estimate: load/store-multiple instructions (LDM, STM, PUSH, POP,
 * LDRD, STRD) and the words they move, and single loads/stores that directly follow another
 * single load/store in the same block (their address phase overlaps, Cortex-M4 TRM 3.3.2).
 */
enum counter {
    LOADS,
    STORES,
    MULTIPLIES,
    DIVIDES,
    BRANCHES,
    OTHER,
    CLASS_COUNT,
    MULTIPLE = CLASS_COUNT,
    MULTIPLE_WORDS,
    PIPELINED,
    COUNTER_COUNT
};

static const char *const counter_names[COUNTER_COUNT] = {
    "loads", "stores", "multiplies", "divides", "branches", "other", "multiple", "multiple_words", "pipelined",
};

static uint64_t counters[COUNTER_COUNT];

struct range {
    uint64_t first;
    uint64_t size;
};

static struct range begin_fn;
static struct range end_fn;
static struct range marks;
static uint64_t (*starts)[COUNTER_COUNT]; /* the counters at each slot's last begin marker */
static FILE *out;

enum marker { MARK_BEGIN = 1, MARK_END = 2 };

/* ---- decoding (Thumb / Thumb-2, ARMv7-M and ARMv8-M Mainline) ---- */

struct decoded {
    enum counter cls;
    unsigned words; /* registers moved by a multiple transfer, 0 otherwise */
};

static unsigned popcount16(unsigned v)
{
    unsigned n = 0;
    for (v &= 0xFFFFu; v; v &= v - 1u) {
        n++;
    }
    return n;
}

static struct decoded decode16(unsigned hw)
{
    struct decoded d = {OTHER, 0};
    if ((hw & 0xF800u) == 0x4800u) { /* LDR (literal) */
        d.cls = LOADS;
    } else if ((hw & 0xF000u) == 0x5000u) { /* load/store, register offset: opB 000-010 store */
        d.cls = ((hw >> 9) & 7u) >= 3u ? LOADS : STORES;
    } else if ((hw & 0xE000u) == 0x6000u || (hw & 0xF000u) == 0x8000u || (hw & 0xF000u) == 0x9000u) {
        d.cls = (hw & 0x0800u) ? LOADS : STORES; /* LDR/STR(B,H) immediate, SP-relative */
    } else if ((hw & 0xFE00u) == 0xB400u) { /* PUSH */
        d.cls = STORES;
        d.words = popcount16(hw & 0x1FFu);
    } else if ((hw & 0xFE00u) == 0xBC00u) { /* POP (a return when it loads PC: still counted a load) */
        d.cls = LOADS;
        d.words = popcount16(hw & 0x1FFu);
    } else if ((hw & 0xF000u) == 0xC000u) { /* LDM / STM */
        d.cls = (hw & 0x0800u) ? LOADS : STORES;
        d.words = popcount16(hw & 0xFFu);
    } else if ((hw & 0xFFC0u) == 0x4340u) { /* MULS */
        d.cls = MULTIPLIES;
    } else if ((hw & 0xF000u) == 0xD000u && ((hw >> 8) & 0xFu) < 0xEu) { /* B<cond> */
        d.cls = BRANCHES;
    } else if ((hw & 0xF800u) == 0xE000u || (hw & 0xFF00u) == 0x4700u || (hw & 0xF500u) == 0xB100u) {
        d.cls = BRANCHES; /* B, BX/BLX register, CBZ/CBNZ */
    } else if ((hw & 0xFD00u) == 0x4400u && ((hw & 7u) | ((hw >> 4) & 8u)) == 15u) {
        d.cls = BRANCHES; /* ADD PC, Rm / MOV PC, Rm */
    }
    return d;
}

static struct decoded decode32(unsigned hw1, unsigned hw2)
{
    struct decoded d = {OTHER, 0};
    if ((hw1 & 0xFE40u) == 0xE800u) { /* LDM / STM (and the other 32-bit multiple forms) */
        d.cls = (hw1 & 0x0010u) ? LOADS : STORES;
        d.words = popcount16(hw2);
    } else if ((hw1 & 0xFE40u) == 0xE840u) { /* LDRD/STRD, exclusives, TBB/TBH */
        if ((hw1 & 0xFFF0u) == 0xE8D0u && (hw2 & 0xFFE0u) == 0xF000u) {
            d.cls = BRANCHES;
        } else {
            d.cls = (hw1 & 0x0010u) ? LOADS : STORES;
            if (hw1 & 0x0100u || hw1 & 0x0020u) { /* LDRD/STRD: P or W set (the exclusives have neither) */
                d.words = 2;
            }
        }
    } else if ((hw1 & 0xF800u) == 0xF000u && (hw2 & 0x8000u)) { /* branches and miscellaneous control */
        const unsigned op = (hw2 >> 12) & 5u;
        if (op == 1u || op == 5u || op == 4u) { /* B.W, BL, BLX */
            d.cls = BRANCHES;
        } else if (((hw1 >> 7) & 7u) != 7u) { /* B<cond>.W (cond 111x is MSR/MRS/hints) */
            d.cls = BRANCHES;
        }
    } else if ((hw1 & 0xFE00u) == 0xF800u) { /* load/store single */
        d.cls = (hw1 & 0x0010u) ? LOADS : STORES;
    } else if ((hw1 & 0xFF80u) == 0xFB00u) { /* MUL, MLA, MLS, SMLAD, SMUAD, SMLAxy, SMMUL ... */
        d.cls = MULTIPLIES;
    } else if ((hw1 & 0xFF80u) == 0xFB80u) { /* long multiply, long MAC, divide */
        const unsigned op1 = (hw1 >> 4) & 7u;
        const unsigned op2 = (hw2 >> 4) & 0xFu;
        d.cls = ((op1 == 1u || op1 == 3u) && op2 == 0xFu) ? DIVIDES : MULTIPLIES;
    } else if ((hw1 & 0xEE00u) == 0xEC00u) { /* coprocessor: VLDR/VSTR/VLDM/VSTM/VPUSH/VPOP, not 64-bit moves */
        const unsigned op = (hw1 >> 4) & 0x3Fu;
        if ((op & 0x3Au) != 0u && (op & 0x3Eu) != 0x04u) {
            d.cls = (hw1 & 0x0010u) ? LOADS : STORES;
        }
    }
    return d;
}

static struct decoded decode(const struct qemu_plugin_insn *insn)
{
    const uint8_t *bytes = qemu_plugin_insn_data(insn);
    const unsigned hw1 = bytes[0] | (bytes[1] << 8);
    if (qemu_plugin_insn_size(insn) < 4) {
        return decode16(hw1);
    }
    return decode32(hw1, bytes[2] | (bytes[3] << 8));
}

/* ---- markers ---- */

static int inside(const struct range *r, uint64_t address)
{
    return address >= r->first && address - r->first < r->size;
}

static void on_marker_store(unsigned int vcpu, qemu_plugin_meminfo_t info, uint64_t vaddr, void *userdata)
{
    (void)vcpu;
    (void)info;
    if (!inside(&marks, vaddr)) {
        return;
    }
    const uint64_t slot = vaddr - marks.first;
    if ((uintptr_t)userdata == MARK_BEGIN) {
        memcpy(starts[slot], counters, sizeof counters);
        return;
    }
    fprintf(out, "TMLI end %llu", (unsigned long long)slot);
    for (int c = 0; c < COUNTER_COUNT; c++) {
        fprintf(out, " %llu", (unsigned long long)(counters[c] - starts[slot][c]));
    }
    fputc('\n', out);
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    const size_t n = qemu_plugin_tb_n_insns(tb);
    int after_single_transfer = 0;
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        const struct decoded d = decode(insn);
        qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64, &counters[d.cls], 1);
        const int single = (d.cls == LOADS || d.cls == STORES) && d.words == 0;
        if (d.words) {
            qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64, &counters[MULTIPLE], 1);
            qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64, &counters[MULTIPLE_WORDS],
                                                       d.words);
        } else if (single && after_single_transfer) {
            qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64, &counters[PIPELINED], 1);
        }
        after_single_transfer = single;

        const uint64_t pc = qemu_plugin_insn_vaddr(insn);
        if (inside(&begin_fn, pc) || inside(&end_fn, pc)) {
            const uintptr_t kind = inside(&begin_fn, pc) ? MARK_BEGIN : MARK_END;
            qemu_plugin_register_vcpu_mem_cb(insn, on_marker_store, QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_MEM_W,
                                             (void *)kind);
        }
    }
}

static void at_qemu_exit(qemu_plugin_id_t id, void *userdata)
{
    (void)id;
    (void)userdata;
    fputs("TMLI exit\n", out);
    fclose(out);
    out = NULL;
}

/* ---- arguments ---- */

static int parse_number(const char *text, uint64_t *value)
{
    char *end = NULL;
    *value = strtoull(text, &end, 0);
    return end != text && *end == '\0';
}

static int fail(const char *message, const char *argument)
{
    char line[512];
    snprintf(line, sizeof line, "tml_icount: %s%s\n", message, argument ? argument : "");
    qemu_plugin_outs(line);
    return -1;
}

TML_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
    (void)info;
    const char *path = NULL;
    struct {
        const char *key;
        uint64_t *value;
    } const numbers[] = {
        {"begin", &begin_fn.first}, {"begin_size", &begin_fn.size}, {"end", &end_fn.first},
        {"end_size", &end_fn.size}, {"marks", &marks.first},        {"marks_size", &marks.size},
    };
    int seen = 0;
    for (int i = 0; i < argc; i++) {
        const char *eq = strchr(argv[i], '=');
        if (eq == NULL) {
            return fail("argument without '=': ", argv[i]);
        }
        const size_t key_length = (size_t)(eq - argv[i]);
        if (key_length == 3 && strncmp(argv[i], "out", 3) == 0) {
            path = eq + 1;
            continue;
        }
        int known = 0;
        for (size_t k = 0; k < sizeof numbers / sizeof numbers[0]; k++) {
            if (strlen(numbers[k].key) == key_length && strncmp(argv[i], numbers[k].key, key_length) == 0) {
                if (!parse_number(eq + 1, numbers[k].value)) {
                    return fail("not a number: ", argv[i]);
                }
                seen |= 1 << k;
                known = 1;
            }
        }
        if (!known) {
            return fail("unknown argument: ", argv[i]);
        }
    }
    if (path == NULL || seen != 0x3F) {
        return fail("needs out=, begin=, begin_size=, end=, end_size=, marks= and marks_size=", NULL);
    }
    begin_fn.first &= ~(uint64_t)1; /* Thumb function symbols have bit 0 set */
    end_fn.first &= ~(uint64_t)1;
    if (marks.size == 0 || marks.size > (1u << 20)) {
        return fail("marks_size out of range", NULL);
    }
    starts = calloc(marks.size, sizeof *starts);
    out = fopen(path, "w");
    if (starts == NULL || out == NULL) {
        return fail("cannot open the report file ", path);
    }
    fputs("TMLI classes", out);
    for (int c = 0; c < COUNTER_COUNT; c++) {
        fprintf(out, " %s", counter_names[c]);
    }
    fputc('\n', out);
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_atexit_cb(id, at_qemu_exit, NULL);
    return 0;
}
