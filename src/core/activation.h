// The gated activations of a BitNet feed-forward: out = act(gate) * up.
#pragma once

#include <optional>
#include <string_view>

namespace trit::engine {

// relu2: max(x, 0)^2 (BitNet b1.58 2B4T); silu: x * sigmoid(x) (the 1bitLLM family).
enum class Activation { Relu2, Silu };

std::string_view activation_name(Activation a);
std::optional<Activation> activation_from_name(std::string_view name);  // relu2, silu, ...

}  // namespace trit::engine
