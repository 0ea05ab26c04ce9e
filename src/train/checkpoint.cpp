#include "train/checkpoint.h"

#include <fcntl.h>
#include <stdio.h>

#include <filesystem>

#include "core/error.h"
#include "io/adapter_gguf.h"
#include "io/file_util.h"

namespace trit::engine {
namespace fs = std::filesystem;
using nlohmann::json;

// Checkpoint folders are named checkpoint-<step>; the newest complete one, or "".
std::string latest_checkpoint(const std::string& dir) {
  std::string best;
  int64_t best_step = -1;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return best;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (!e.is_directory() || name.rfind("checkpoint-", 0) != 0) continue;
    const std::string num = name.substr(11);
    if (num.empty() || num.find_first_not_of("0123456789") != std::string::npos) continue;
    if (!fs::exists(e.path() / "state.json")) continue;
    const int64_t step = std::stoll(num);
    if (step > best_step) {
      best_step = step;
      best = e.path().string();
    }
  }
  return best;
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
  fs::create_directories(tmp);
  save_adapter_gguf(adapter, (tmp / "adapter.gguf").string());
  write_file_atomic((tmp / "optimizer.bin").string(), opt.save());
  const json state = {{"version", 1}, {"step", step}, {"data", data_state}, {"settings", settings}};
  write_file_atomic((tmp / "state.json").string(), state.dump(2));
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
  const std::string path = (fs::path(dir) / "state.json").string();
  json j;
  try {
    j = json::parse(read_whole_file(path));
  } catch (const json::exception& e) {
    fail(path, ": not valid JSON: ", e.what());
  }
  Checkpoint c;
  try {
    c.step = j.at("step").get<int64_t>();
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
