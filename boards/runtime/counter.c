/*
 * The instruction counter. Under -icount shift=0 a timer ticking at f Hz advances once per
 * 1e9/f instructions (TML_INSTRUCTIONS_PER_TICK, from the board file).
 *
 * TML_COUNTER_TIM2: the STM32's 32-bit TIM2, which QEMU runs at 1 GHz: exact counts. Its
 * wrap is tracked in software, so two reads must be less than 2^32 instructions apart.
 * TML_COUNTER_SYSTICK: the 24-bit SysTick on the core clock; its interrupt counts wraps.
 */
#include "tml_runtime.h"

#ifndef TML_INSTRUCTIONS_PER_TICK
#error "TML_INSTRUCTIONS_PER_TICK must come from the board's build flags"
#endif

#define REG32(address) (*(volatile uint32_t *)(address))

#if defined(TML_COUNTER_TIM2)

#define TIM2_CR1 REG32(0x40000000u)
#define TIM2_EGR REG32(0x40000014u)
#define TIM2_CNT REG32(0x40000024u)
#define TIM2_PSC REG32(0x40000028u)
#define TIM2_ARR REG32(0x4000002Cu)
#define RCC_APB1ENR REG32(0x40023840u)

static uint32_t last_count;
static uint64_t wrapped;

void tml_counter_start(void)
{
    RCC_APB1ENR |= 1u;      /* TIM2 clock on (a real STM32 needs it; QEMU ignores it) */
    TIM2_PSC = 0;
    TIM2_ARR = 0xFFFFFFFFu;
    TIM2_EGR = 1u;          /* load the prescaler */
    TIM2_CNT = 0;
    TIM2_CR1 = 1u;          /* counter enable */
    last_count = 0;
    wrapped = 0;
}

uint64_t tml_counter_instructions(void)
{
    const uint32_t count = TIM2_CNT;
    if (count < last_count) {
        wrapped += (uint64_t)1 << 32;
    }
    last_count = count;
    return (wrapped + count) * TML_INSTRUCTIONS_PER_TICK;
}

#elif defined(TML_COUNTER_SYSTICK)

#define SYST_CSR REG32(0xE000E010u)
#define SYST_RVR REG32(0xE000E014u)
#define SYST_CVR REG32(0xE000E018u)
#define SYSTICK_RELOAD 0x00FFFFFFu

static volatile uint32_t wraps;

void SysTick_Handler(void)
{
    wraps++;
}

void tml_counter_start(void)
{
    SYST_RVR = SYSTICK_RELOAD;
    SYST_CVR = 0;
    SYST_CSR = 0x7u; /* processor clock, interrupt on wrap, enable */
    while (SYST_CVR == 0) {
        /* the current value reads 0 until the first reload */
    }
    wraps = 0;
}

uint64_t tml_counter_instructions(void)
{
    uint32_t before;
    uint32_t value;
    do {
        before = wraps;
        value = SYST_CVR;
    } while (before != wraps);
    const uint64_t ticks = (uint64_t)before * (SYSTICK_RELOAD + 1u) + (SYSTICK_RELOAD - value);
    return ticks * TML_INSTRUCTIONS_PER_TICK;
}

#else
#error "define TML_COUNTER_TIM2 or TML_COUNTER_SYSTICK (the board's counter)"
#endif
