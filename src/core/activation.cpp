#include "core/activation.h"

namespace trit::engine {

std::string_view activation_name(Activation a) {
  return a == Activation::Relu2 ? "relu2" : "silu";
}

std::optional<Activation> activation_from_name(std::string_view name) {
  if (name == "relu2" || name == "relu_squared" || name == "squared_relu") return Activation::Relu2;
  if (name == "silu" || name == "swish") return Activation::Silu;
  return std::nullopt;
}

}  // namespace trit::engine
