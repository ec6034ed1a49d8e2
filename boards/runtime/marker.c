/*
 * Markers for exact instruction counts. Under QEMU, tinyml loads a TCG plugin (tml_icount.c) that
 * counts every executed instruction and watches the one-byte stores these two functions make:
 * the address stored to names the slot, the function says begin or end. They stay out of line
 * (noinline) so that their addresses, read from the ELF's symbol table, cover every marker store.
 * On a real board they cost a few instructions and change nothing.
 */
#include "tml_runtime.h"

__attribute__((noinline)) void tml_mark_begin(volatile uint8_t *slot)
{
    *slot = 1u;
}

__attribute__((noinline)) void tml_mark_end(volatile uint8_t *slot)
{
    *slot = 2u;
}
