/*
 * Reset, vector table and fault reporting for every tinyml board (ARMv7-M and ARMv8-M Mainline).
 *
 * Reset copies .data from flash, zeroes .bss, enables the FPU (an FPU instruction faults until
 * CPACR grants access), then runs main() and exits with its status over semihosting.
 * A fault prints the fault status registers and the stacked frame, then exits with
 * TML_EXIT_FAULT so that the host tells a crash from a wrong answer.
 */
#include "tml_runtime.h"

#define REG32(address) (*(volatile uint32_t *)(address))
#define SCB_CPACR REG32(0xE000ED88u)
#define SCB_CFSR REG32(0xE000ED28u)
#define SCB_HFSR REG32(0xE000ED2Cu)
#define SCB_MMFAR REG32(0xE000ED34u)
#define SCB_BFAR REG32(0xE000ED38u)

#define EXTERNAL_INTERRUPTS 96

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;
int main(void);

uint32_t *tml_stack_limit(void)
{
    return &_ebss;
}

uint32_t *tml_stack_top(void)
{
    return &_estack;
}

void Reset_Handler(void)
{
#if defined(__ARM_FP)
    SCB_CPACR |= 0xFu << 20; /* CP10 and CP11: full access */
    __asm__ volatile("dsb\n\tisb" ::: "memory");
#endif
    const uint32_t *from = &_sidata;
    for (uint32_t *to = &_sdata; to < &_edata;) {
        *to++ = *from++;
    }
    for (uint32_t *to = &_sbss; to < &_ebss;) {
        *to++ = 0;
    }
    tml_exit(main());
}

/* Called with the exception frame the core pushed: r0-r3, r12, lr, pc, xpsr. */
void tml_fault_report(const uint32_t *frame, uint32_t exc_return)
{
    static const char *const names[] = {"r0", "r1", "r2", "r3", "r12", "lr", "pc", "xpsr"};
    uint32_t ipsr;
    __asm__ volatile("mrs %0, ipsr" : "=r"(ipsr));
    tml_flush();
    tml_print("\nTML fault exception=");
    tml_print_int((int64_t)(ipsr & 0x1FFu));
    tml_print(" cfsr=");
    tml_print_hex(SCB_CFSR);
    tml_print(" hfsr=");
    tml_print_hex(SCB_HFSR);
    tml_print(" mmfar=");
    tml_print_hex(SCB_MMFAR);
    tml_print(" bfar=");
    tml_print_hex(SCB_BFAR);
    tml_print(" sp=");
    tml_print_hex((uint32_t)frame);
    tml_print(" exc_return=");
    tml_print_hex(exc_return);
    for (unsigned i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        tml_print(" ");
        tml_print(names[i]);
        tml_print("=");
        tml_print_hex(frame[i]);
    }
    tml_print("\n");
    tml_exit(TML_EXIT_FAULT);
}

/* Every fault and unexpected interrupt: find the frame on the stack that was in use. */
__attribute__((naked)) void Fault_Handler(void)
{
    __asm__ volatile(
        "tst lr, #4\n\t"
        "ite eq\n\t"
        "mrseq r0, msp\n\t"
        "mrsne r0, psp\n\t"
        "mov r1, lr\n\t"
        "b tml_fault_report\n\t");
}

void NMI_Handler(void) __attribute__((weak, alias("Fault_Handler")));
void HardFault_Handler(void) __attribute__((weak, alias("Fault_Handler")));
void MemManage_Handler(void) __attribute__((weak, alias("Fault_Handler")));
void BusFault_Handler(void) __attribute__((weak, alias("Fault_Handler")));
void UsageFault_Handler(void) __attribute__((weak, alias("Fault_Handler")));
void SecureFault_Handler(void) __attribute__((weak, alias("Fault_Handler")));
void SVC_Handler(void) __attribute__((weak, alias("Fault_Handler")));
void DebugMon_Handler(void) __attribute__((weak, alias("Fault_Handler")));
void PendSV_Handler(void) __attribute__((weak, alias("Fault_Handler")));
void SysTick_Handler(void) __attribute__((weak, alias("Fault_Handler")));

typedef void (*tml_vector)(void);

__attribute__((section(".isr_vector"), used))
const tml_vector tml_vector_table[16 + EXTERNAL_INTERRUPTS] = {
    [0] = (tml_vector)&_estack,
    [1] = Reset_Handler,
    [2] = NMI_Handler,
    [3] = HardFault_Handler,
    [4] = MemManage_Handler,
    [5] = BusFault_Handler,
    [6] = UsageFault_Handler,
    [7] = SecureFault_Handler,
    [11] = SVC_Handler,
    [12] = DebugMon_Handler,
    [14] = PendSV_Handler,
    [15] = SysTick_Handler,
    [16 ... 16 + EXTERNAL_INTERRUPTS - 1] = Fault_Handler,
};
