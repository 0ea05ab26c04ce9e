// Whole-file reads and writes that never leave a partial file in place of a good one.
#pragma once

#include <string>
#include <string_view>

namespace trit::engine {

// Writes data to "<path>.tmp", syncs it to disk, and renames it over path. Throws trit::Error
// naming the path on failure (the temporary file is removed).
void write_file_atomic(const std::string& path, std::string_view data);

// Whether two paths name the same file (or would, once the second exists).
bool same_file(const std::string& a, const std::string& b);

// The whole file; throws trit::Error naming the path when it cannot be read.
std::string read_whole_file(const std::string& path);

}  // namespace trit::engine
