// A fresh LoRA adapter for a model, initialised as PEFT does.
#pragma once

#include <cstdint>
#include <string>

#include "core/lora.h"
#include "model/hparams.h"

namespace trit::engine {

// A fresh adapter as PEFT initialises one: A kaiming-uniform (a = sqrt(5), i.e. uniform in
// [-1/sqrt(n_in), 1/sqrt(n_in)]), B zero, for the given targets of every block (and the head
// when "head" is among them).
LoraAdapter lora_init(const HParams& hp, const std::string& targets, int64_t rank, float alpha,
                      bool rslora, uint64_t seed);

}  // namespace trit::engine
