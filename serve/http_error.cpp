#include "serve/http_error.h"

#include <nlohmann/json.hpp>

namespace trit::serve {

const char* error_type(int status) {
  switch (status) {
    case 401:
      return "authentication_error";
    case 503:
      return "unavailable_error";
    default:
      return status >= 500 ? "server_error" : "invalid_request_error";
  }
}

std::string error_body(int status, const std::string& message, const std::string& param) {
  nlohmann::json e = {{"message", message},
                      {"type", error_type(status)},
                      {"param", param.empty() ? nlohmann::json() : nlohmann::json(param)},
                      {"code", status}};
  return nlohmann::json{{"error", e}}.dump(-1, ' ', false,
                                           nlohmann::json::error_handler_t::replace);
}

}  // namespace trit::serve
