#include "train/checkpoint.h"

#include <fcntl.h>
#include <stdio.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <utility>
#include <vector>

#include "core/digest.h"
#include "core/error.h"
#include "io/adapter_gguf.h"
#include "io/file_util.h"

namespace trit::engine {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// The checksum of a file and its size, read in pieces (an optimizer state may be large).
json file_digest(const fs::path& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) fail(path.string(), ": cannot open");
  Fnv1a64 h;
  std::vector<char> buf(1 << 20);
  int64_t bytes = 0;
  for (size_t n; (n = std::fread(buf.data(), 1, buf.size(), f)) > 0;) {
    h.update(buf.data(), n);
    bytes += int64_t(n);
  }
  const bool bad = std::ferror(f);
  std::fclose(f);
  if (bad) fail(path.string(), ": cannot read");
  return {{"bytes", bytes}, {"fnv1a64", h.hex()}};
}

// The digest of state.json's object without its own "digest" field.
std::string state_digest(json state) {
  state.erase("digest");
  Fnv1a64 h;
  h.update(state.dump());
  return h.hex();
}

// The checkpoint-<step> folders of dir, newest first.
std::vector<std::pair<int64_t, std::string>> checkpoint_folders(const std::string& dir) {
  std::vector<std::pair<int64_t, std::string>> found;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return found;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (!e.is_directory() || name.rfind("checkpoint-", 0) != 0) continue;
    const std::string num = name.substr(11);
    if (num.empty() || num.size() > 18 || num.find_first_not_of("0123456789") != std::string::npos)
      continue;
    found.emplace_back(std::stoll(num), e.path().string());
  }
  std::sort(found.begin(), found.end(), std::greater<>());
  return found;
}

}  // namespace

// Checkpoint folders are named checkpoint-<step>; the newest complete one, or "".
std::string latest_checkpoint(const std::string& dir) {
  for (const auto& [step, path] : checkpoint_folders(dir)) {
    if (fs::exists(fs::path(path) / "state.json")) return path;
  }
  return "";
}

std::string newest_good_checkpoint(const std::string& dir,
                                   const std::function<void(const std::string&)>& skipped) {
  for (const auto& [step, path] : checkpoint_folders(dir)) {
    const std::string why = checkpoint_damage(path);
    if (why.empty()) return path;
    if (skipped) skipped(why);
  }
  return "";
}

std::string checkpoint_damage(const std::string& dir) {
  const fs::path state_path = fs::path(dir) / "state.json";
  std::string text;
  try {
    text = read_whole_file(state_path.string());
  } catch (const Error& e) {
    return e.what();
  }
  json state;
  try {
    state = json::parse(text);
  } catch (const json::exception&) {
    return state_path.string() + ": not valid JSON (the file is damaged)";
  }
  if (!state.is_object()) return state_path.string() + ": not a JSON object";
  if (!state.contains("digest")) return "";  // written before checkpoints carried checksums
  if (!state["digest"].is_string() || state["digest"].get<std::string>() != state_digest(state)) {
    return state_path.string() + ": its checksum does not match (the file is damaged)";
  }
  if (!state.contains("files") || !state["files"].is_object()) {
    return state_path.string() + ": no 'files' with the checksums of the others";
  }
  for (const auto& [name, want] : state["files"].items()) {
    const fs::path p = fs::path(dir) / name;
    std::error_code ec;
    if (name.find('/') != std::string::npos || !fs::is_regular_file(p, ec)) {
      return p.string() + ": missing";
    }
    json got;
    try {
      got = file_digest(p);
    } catch (const Error& e) {
      return e.what();
    }
    if (got["bytes"] != want.value("bytes", json())) {
      return cat(p.string(), ": ", got["bytes"].dump(), " bytes, expected ",
                 want.value("bytes", json()).dump(), " (the file is truncated or damaged)");
    }
    if (got["fnv1a64"] != want.value("fnv1a64", json())) {
      return p.string() + ": its checksum does not match (the file is damaged)";
    }
  }
  return "";
}

// Writes adapter, optimizer state and the run's position to <dir>/checkpoint-<step>, through a
// temporary folder renamed into place.
std::string save_checkpoint(const std::string& dir, int64_t step, const LoraAdapter& adapter,
                            const AdamW& opt, const BatchState& data_state, const json& settings) {
  fs::create_directories(dir);
  const fs::path final_dir = fs::path(dir) / cat("checkpoint-", step);
  const fs::path tmp = fs::path(dir) / cat(".checkpoint-", step, ".tmp");
  std::error_code ec;
  fs::remove_all(tmp, ec);
  try {
    fs::create_directories(tmp);
    save_adapter_gguf(adapter, (tmp / "adapter.gguf").string());
    const std::string opt_state = opt.save();
    write_file_atomic((tmp / "optimizer.bin").string(), opt_state);
    // Each file's size and checksum, and state.json's own: a damaged checkpoint is found before
    // it is resumed (checkpoint_damage).
    Fnv1a64 opt_hash;
    opt_hash.update(opt_state);
    json state = {
        {"version", 1},
        {"step", step},
        {"data", data_state},
        {"settings", settings},
        {"files",
         {{"adapter.gguf", file_digest(tmp / "adapter.gguf")},
          {"optimizer.bin", {{"bytes", int64_t(opt_state.size())}, {"fnv1a64", opt_hash.hex()}}}}}};
    state["digest"] = state_digest(state);
    write_file_atomic((tmp / "state.json").string(), state.dump(2));
  } catch (const std::exception& e) {
    // A full disk or a file-size limit: nothing of this checkpoint stays, the others are
    // untouched.
    fs::remove_all(tmp, ec);
    fail("cannot write the checkpoint ", final_dir.string(), " (", e.what(),
         "); the earlier checkpoints are as they were");
  }
  // A checkpoint of the same step already there (a run resumed from an earlier one) is swapped
  // out in one step, so that a reader never finds the folder missing or half written.
#ifdef RENAME_EXCHANGE
  if (fs::exists(final_dir, ec) &&
      ::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, final_dir.c_str(), RENAME_EXCHANGE) == 0) {
    fs::remove_all(tmp, ec);
    return final_dir.string();
  }
#endif
  fs::remove_all(final_dir, ec);
  fs::rename(tmp, final_dir);
  return final_dir.string();
}

Checkpoint read_checkpoint(const std::string& dir) {
  if (const std::string why = checkpoint_damage(dir); !why.empty()) fail(why);
  const std::string path = (fs::path(dir) / "state.json").string();
  json j;
  try {
    j = json::parse(read_whole_file(path));
  } catch (const json::exception& e) {
    fail(path, ": not valid JSON: ", e.what());
  }
  Checkpoint c;
  try {
    const json& step = j.at("step");
    if (!step.is_number_integer() || step.get<int64_t>() < 0) {
      fail(path, ": 'step' must be a non-negative integer, not ", step.dump().substr(0, 40));
    }
    c.step = step.get<int64_t>();
    c.settings = j.at("settings");
    c.data_state = j.at("data").get<BatchState>();
  } catch (const json::exception& e) {
    fail(path, ": ", e.what());
  }
  return c;
}

std::vector<std::string> check_same_settings(const json& saved, const json& now,
                                             const std::string& where) {
  std::vector<std::string> changed;
  // Settings added after checkpoints were first written, with the value older runs had.
  static const json kAddedLater = {{"act_quant", true}};
  // Checkpoints written before the model was named by file name and size and the data by its
  // tokens hold absolute paths: the model's file name is compared, the data cannot be.
  const bool paths = saved.contains("data") && saved["data"].is_string() &&
                     saved["data"].get<std::string>().rfind("tokens:", 0) != 0;
  for (auto it = now.begin(); it != now.end(); ++it) {
    if (!saved.contains(it.key()) && kAddedLater.contains(it.key()) &&
        kAddedLater[it.key()] == it.value()) {
      continue;
    }
    if (paths && (it.key() == "data" || it.key() == "model_bytes")) continue;
    if (paths && it.key() == "model" && saved["model"].is_string() &&
        fs::path(saved["model"].get<std::string>()).filename() == it.value().get<std::string>()) {
      continue;
    }
    if (!saved.contains(it.key())) fail(where, ": the checkpoint has no setting '", it.key(), "'");
    if (saved[it.key()] == it.value()) continue;
    if (it.key() == "lr" || it.key() == "grad_clip") {
      changed.push_back(cat(it.key(), " changes from ", saved[it.key()].dump(), " to ",
                            it.value().dump(), " from here on"));
      continue;
    }
    fail(where, ": setting '", it.key(), "' is ", saved[it.key()].dump(), " in the checkpoint but ",
         it.value().dump(),
         " now; resume with the same settings (only lr and grad_clip may change)");
  }
  return changed;
}

}  // namespace trit::engine
