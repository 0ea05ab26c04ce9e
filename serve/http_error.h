// An error a request gets back: the HTTP status and OpenAI's error object
// ({"error": {"message", "type", "param", "code"}}), thrown by the request handlers.
#pragma once

#include <stdexcept>
#include <string>

namespace trit::serve {

class HttpError : public std::runtime_error {
 public:
  HttpError(int status, std::string message, std::string param = "")
      : std::runtime_error(message), status_(status), param_(std::move(param)) {}
  int status() const { return status_; }
  const std::string& param() const { return param_; }

 private:
  int status_;
  std::string param_;
};

// OpenAI's error type for a status: invalid_request_error (400, 404, 413, ...),
// authentication_error (401), server_error (500), unavailable_error (503).
const char* error_type(int status);
// The JSON body of an error.
std::string error_body(int status, const std::string& message, const std::string& param = "");

}  // namespace trit::serve
