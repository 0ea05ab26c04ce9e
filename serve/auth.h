// Who may talk to the server: the host it binds to and the API key requests must carry.
#pragma once

#include <string>
#include <string_view>

namespace trit::serve {

// Whether a bind address reaches this machine only: localhost, 127.0.0.0/8, ::1.
bool is_loopback_host(const std::string& host);

// Whether an Authorization header carries "Bearer <key>", compared in time that does not
// depend on where the two first differ.
bool bearer_matches(std::string_view header, std::string_view key);

}  // namespace trit::serve
