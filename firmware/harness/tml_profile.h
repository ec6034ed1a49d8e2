/*
 * tml_profile.h - per-layer instruction counts. A generated model.c built with -DTML_PROFILE
 * includes this header, and its TML_LAYER_BEGIN(i) / TML_LAYER_END(i) around each layer
 * add that layer's instructions to tml_profile_layer_instructions[i].
 */
#ifndef TML_PROFILE_H
#define TML_PROFILE_H

#include <stdint.h>

void tml_profile_layer_begin(int layer);
void tml_profile_layer_end(int layer);

#define TML_LAYER_BEGIN(i) tml_profile_layer_begin(i)
#define TML_LAYER_END(i) tml_profile_layer_end(i)

#endif /* TML_PROFILE_H */
