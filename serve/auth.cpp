#include "serve/auth.h"

#include <arpa/inet.h>

#include <cstdint>

namespace trit::serve {

bool is_loopback_host(const std::string& host) {
  if (host == "localhost" || host == "::1" || host == "[::1]") return true;
  in_addr a{};
  if (inet_pton(AF_INET, host.c_str(), &a) == 1) return (ntohl(a.s_addr) >> 24) == 127;
  return false;
}

bool bearer_matches(std::string_view header, std::string_view key) {
  constexpr std::string_view kScheme = "Bearer ";
  const std::string_view given =
      header.substr(0, kScheme.size()) == kScheme ? header.substr(kScheme.size()) : "";
  // Every byte of the key is compared whatever the given token holds.
  uint8_t diff = given.size() == key.size() ? 0 : 1;
  for (size_t i = 0; i < key.size(); ++i) {
    const uint8_t g = i < given.size() ? uint8_t(given[i]) : 0;
    diff |= uint8_t(g ^ uint8_t(key[i]));
  }
  return diff == 0 && !key.empty();
}

}  // namespace trit::serve
