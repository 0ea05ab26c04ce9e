// trit's C++ API: run and LoRA fine-tune BitNet b1.58 models on CPUs and Vulkan GPUs.
//
//   trit::Model model = trit::Model::open("model.gguf");      // trit/model.h
//   trit::Session chat(model);                                  // trit/session.h
//   trit::GenerateOptions g;
//   g.on_text = [](std::string_view piece) { std::cout << piece << std::flush; return true; };
//   chat.chat({{"user", "Hello"}}, g);
//
// Training (trit/train.h), evaluation (trit/eval.h), devices (trit/devices.h) and the tools
// (trit/tools.h) complete it; trit/trit.h is the same for C. Errors are trit::Error
// (trit/error.h).
#pragma once

#include "trit/batch.h"
#include "trit/devices.h"
#include "trit/error.h"
#include "trit/eval.h"
#include "trit/model.h"
#include "trit/session.h"
#include "trit/tools.h"
#include "trit/train.h"
#include "trit/version.h"
