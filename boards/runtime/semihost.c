/* Console output and exit through ARM semihosting (bkpt 0xAB), as QEMU implements it. */
#include "tml_runtime.h"

#define SYS_WRITE0 0x04
#define SYS_EXIT_EXTENDED 0x20
#define ADP_STOPPED_APPLICATION_EXIT 0x20026

static char line[128];
static uint32_t line_length;

static int semihost_call(int operation, const void *argument)
{
    register int r0 __asm__("r0") = operation;
    register const void *r1 __asm__("r1") = argument;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

void tml_flush(void)
{
    if (line_length > 0) {
        line[line_length] = '\0';
        semihost_call(SYS_WRITE0, line);
        line_length = 0;
    }
}

static void put_char(char c)
{
    line[line_length++] = c;
    if (c == '\n' || line_length == sizeof(line) - 1) {
        tml_flush();
    }
}

void tml_print(const char *text)
{
    while (*text) {
        put_char(*text++);
    }
}

void tml_print_int(int64_t value)
{
    char digits[20];
    int count = 0;
    /* Work on the negative magnitude so INT64_MIN needs no special case. */
    int64_t rest = value < 0 ? value : -value;
    if (value < 0) {
        put_char('-');
    }
    do {
        digits[count++] = (char)('0' - rest % 10);
        rest /= 10;
    } while (rest != 0);
    while (count > 0) {
        put_char(digits[--count]);
    }
}

void tml_print_hex(uint32_t value)
{
    static const char hex[] = "0123456789abcdef";
    put_char('0');
    put_char('x');
    for (int shift = 28; shift >= 0; shift -= 4) {
        put_char(hex[(value >> shift) & 0xFu]);
    }
}

void tml_exit(int status)
{
    const uint32_t block[2] = {ADP_STOPPED_APPLICATION_EXIT, (uint32_t)status};
    tml_flush();
    semihost_call(SYS_EXIT_EXTENDED, block);
    for (;;) {
    }
}
