/* The bits set in each byte value, for the table popcount (TML_XNOR_POPCOUNT_TABLE) of tml_xnor.h. */
#include "tml_xnor.h"

#ifdef TML_XNOR_POPCOUNT_TABLE
#define TML_B2(n) n, n + 1, n + 1, n + 2
#define TML_B4(n) TML_B2(n), TML_B2(n + 1), TML_B2(n + 1), TML_B2(n + 2)
#define TML_B6(n) TML_B4(n), TML_B4(n + 1), TML_B4(n + 1), TML_B4(n + 2)
const uint8_t tml_xnor_bit_counts[256] = {TML_B6(0), TML_B6(1), TML_B6(1), TML_B6(2)};
#endif
