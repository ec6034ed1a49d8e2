/*
 * The test harness: runs the model on each test input and reports, over semihosting, one
 * line per fact ("TML <what> ..."), which tinyml.qemu parses:
 *
 *   TML model inputs=<N> input_size=<n> output_size=<m> layers=<L>
 *   TML layer <i> <name>
 *   TML overhead <instructions of one empty begin/end pair, taken out of each layer>
 *   TML output <k> <v0> <v1> ...
 *   TML instructions <k> <instructions of tml_model_invoke>
 *   TML layer_instructions <k> <layer 0> <layer 1> ...
 *   TML stack <high-water bytes>
 *   TML status <tml_model_invoke's result> [layer=<tml_model_failed_layer> sample=<k>, when it failed]
 *
 * The counts come from the board's timer. The same regions are also delimited by marker stores
 * (tml_mark_begin/tml_mark_end into tml_marks: slot 0 each tml_model_invoke, slot 1 + i layer i),
 * which QEMU's instruction-count plugin turns into exact counts. Before the first inference one
 * empty region of each kind is marked (slot 0, then slot 1) so that the host can take the
 * markers' own cost out, as pair_overhead does for the timer.
 *
 * The stack is painted with a pattern up to the current stack pointer before anything runs;
 * the high-water mark is the deepest word that no longer holds the pattern.
 */
#include <stdint.h>

#include "model.h"
#include "tml_profile.h"
#include "tml_runtime.h"

#define STACK_PAINT 0xC5A5C5A5u
#define MARK_INVOKE 0
#define MARK_LAYER0 1

/* One byte per counted region; the plugin reads the slot from the address a marker stores to. */
volatile uint8_t tml_marks[MARK_LAYER0 + TML_MODEL_LAYER_COUNT];

extern const int32_t tml_test_input_count;
extern const int8_t tml_test_inputs[][TML_MODEL_INPUT_SIZE];

static int8_t output[TML_MODEL_OUTPUT_SIZE];
static uint64_t layer_start[TML_MODEL_LAYER_COUNT];
static uint64_t layer_instructions[TML_MODEL_LAYER_COUNT];
static uint64_t pair_overhead;

void tml_profile_layer_begin(int layer)
{
    tml_mark_begin(&tml_marks[MARK_LAYER0 + layer]);
    layer_start[layer] = tml_counter_instructions();
}

void tml_profile_layer_end(int layer)
{
    const uint64_t now = tml_counter_instructions();
    tml_mark_end(&tml_marks[MARK_LAYER0 + layer]);
    layer_instructions[layer] += now - layer_start[layer] - pair_overhead;
}

/* Paint from the stack limit up to just below this function's frame. */
__attribute__((noinline)) static void paint_stack(void)
{
    uint32_t *sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    for (volatile uint32_t *word = tml_stack_limit(); word < sp - 8; word++) {
        *word = STACK_PAINT;
    }
}

static uint32_t stack_high_water(void)
{
    const uint32_t *word = tml_stack_limit();
    while (word < tml_stack_top() && *word == STACK_PAINT) {
        word++;
    }
    return (uint32_t)((const uint8_t *)tml_stack_top() - (const uint8_t *)word);
}

/* What one empty begin/end pair costs, so that it can be taken out of every layer's count; and
 * the same for the plugin: an empty invoke region, then an empty layer region. */
static void measure_overhead(void)
{
    tml_mark_begin(&tml_marks[MARK_INVOKE]);
    tml_mark_end(&tml_marks[MARK_INVOKE]);
    pair_overhead = 0;
    tml_profile_layer_begin(0);
    tml_profile_layer_end(0);
    pair_overhead = layer_instructions[0];
    layer_instructions[0] = 0;
}

static void print_line_of_counts(const char *tag, int32_t index, const uint64_t *values, int32_t count)
{
    tml_print("TML ");
    tml_print(tag);
    tml_print(" ");
    tml_print_int(index);
    for (int32_t i = 0; i < count; i++) {
        tml_print(" ");
        tml_print_int((int64_t)values[i]);
    }
    tml_print("\n");
}

int main(void)
{
    paint_stack();
    tml_counter_start();
#if defined(TML_INJECT_FAULT)
    __asm__ volatile(".short 0xde00"); /* udf #0: a permanently undefined instruction */
#endif
#if defined(TML_INJECT_HANG)
    for (volatile int spin = 1; spin;) {
    }
#endif
    measure_overhead();

    tml_print("TML model inputs=");
    tml_print_int(tml_test_input_count);
    tml_print(" input_size=");
    tml_print_int(TML_MODEL_INPUT_SIZE);
    tml_print(" output_size=");
    tml_print_int(TML_MODEL_OUTPUT_SIZE);
    tml_print(" layers=");
    tml_print_int(TML_MODEL_LAYER_COUNT);
    tml_print("\n");
    for (int32_t i = 0; i < TML_MODEL_LAYER_COUNT; i++) {
        tml_print("TML layer ");
        tml_print_int(i);
        tml_print(" ");
        tml_print(tml_model_layer_names[i]);
        tml_print("\n");
    }
    tml_print("TML overhead ");
    tml_print_int((int64_t)pair_overhead);
    tml_print("\n");

    int status = 0;
    int32_t failed_sample = -1;
    for (int32_t k = 0; k < tml_test_input_count && status == 0; k++) {
        for (int32_t i = 0; i < TML_MODEL_LAYER_COUNT; i++) {
            layer_instructions[i] = 0;
        }
        const uint64_t start = tml_counter_instructions();
        tml_mark_begin(&tml_marks[MARK_INVOKE]);
        status = tml_model_invoke(tml_test_inputs[k], output);
        tml_mark_end(&tml_marks[MARK_INVOKE]);
        const uint64_t total = tml_counter_instructions() - start;
        if (status != 0) {
            failed_sample = k;
        }

        tml_print("TML output ");
        tml_print_int(k);
        for (int32_t i = 0; i < TML_MODEL_OUTPUT_SIZE; i++) {
            tml_print(" ");
            tml_print_int(output[i]);
        }
        tml_print("\n");
        print_line_of_counts("instructions", k, &total, 1);
        print_line_of_counts("layer_instructions", k, layer_instructions, TML_MODEL_LAYER_COUNT);
    }
    tml_print("TML stack ");
    tml_print_int(stack_high_water());
    tml_print("\nTML status ");
    tml_print_int(status);
    if (status != 0) {
        tml_print(" layer=");
        tml_print_int(tml_model_failed_layer);
        tml_print(" sample=");
        tml_print_int(failed_sample);
    }
    tml_print("\n");
    return status == 0 ? TML_EXIT_OK : TML_EXIT_MODEL_ERROR;
}
