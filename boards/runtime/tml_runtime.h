/*
 * tml_runtime.h - what the board runtime gives a firmware: console and exit over
 * semihosting, an instruction counter, and the stack bounds for a high-water mark.
 *
 * Under qemu-system-arm -icount shift=0 the virtual clock advances one nanosecond per
 * instruction, so a timer read through tml_counter_instructions() counts instructions.
 */
#ifndef TML_RUNTIME_H
#define TML_RUNTIME_H

#include <stdint.h>

/* Exit statuses seen by the host as QEMU's exit code. */
#define TML_EXIT_OK 0
#define TML_EXIT_MODEL_ERROR 1
#define TML_EXIT_FAULT 3

/* Console: text is buffered and written over semihosting at each newline. */
void tml_print(const char *text);
void tml_print_int(int64_t value);
void tml_print_hex(uint32_t value);
void tml_flush(void);

/* Flush the console and end the program; QEMU exits with `status` (0..255). */
void tml_exit(int status) __attribute__((noreturn));

/* Start the instruction counter, then read it (monotonic, 64-bit). */
void tml_counter_start(void);
uint64_t tml_counter_instructions(void);

/* Markers for the instruction-count plugin: a begin and an end store into the same slot byte
 * delimit one counted region (marker.c). */
void tml_mark_begin(volatile uint8_t *slot);
void tml_mark_end(volatile uint8_t *slot);

/* The stack grows down from tml_stack_top() to tml_stack_limit() (end of .bss). */
uint32_t *tml_stack_limit(void);
uint32_t *tml_stack_top(void);

#endif /* TML_RUNTIME_H */
