// Whether the client of a request that is not streamed is still there. cpp-httplib 0.11 gives a
// handler no way to see its connection, so the connection's socket is found among the
// process's descriptors by its peer's address, and read without consuming: a socket that reads
// as ended means the client hung up. (A streamed response learns it from its next write.)
#pragma once

#include <string>

namespace trit::serve {

// The descriptor of this process's TCP socket whose peer is addr:port; -1 when none is found.
int find_peer_socket(const std::string& addr, int port);

// Whether the peer of a connected socket has closed it (and sent nothing more).
bool peer_closed(int fd);

}  // namespace trit::serve
