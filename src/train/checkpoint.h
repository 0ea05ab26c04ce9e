// Fine-tuning checkpoints (DESIGN section 3): a folder checkpoint-<step> holding the adapter,
// the optimizer state and state.json (the run's settings, step and data position), written to
// a temporary folder and renamed into place, so a crash never leaves a half-written one.
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/lora.h"
#include "data/dataset.h"
#include "train/optimizer.h"

namespace trit::engine {

struct Checkpoint {
  int64_t step = 0;
  BatchState data_state;
  nlohmann::json settings;
};

// The newest complete checkpoint-<step> folder in dir, or "" when there is none.
std::string latest_checkpoint(const std::string& dir);

// What is wrong with a checkpoint folder ("" when nothing is): state.json unreadable or not
// matching its own checksum, a file it lists missing, of another size or checksum. Folders
// written before checkpoints carried checksums are taken as they are.
std::string checkpoint_damage(const std::string& dir);

// The newest checkpoint-<step> folder in dir that is not damaged, or "" when there is none;
// `skipped` gets the damage of each newer one passed over.
std::string newest_good_checkpoint(const std::string& dir,
                                   const std::function<void(const std::string&)>& skipped);

// Writes adapter, optimizer state and the run's position to <dir>/checkpoint-<step>; returns
// the folder.
std::string save_checkpoint(const std::string& dir, int64_t step, const LoraAdapter& adapter,
                            const AdamW& opt, const BatchState& data_state,
                            const nlohmann::json& settings);

// state.json of a checkpoint folder (checked with checkpoint_damage first); errors name the
// file.
Checkpoint read_checkpoint(const std::string& dir);

// Throws naming `where` when a setting of `now` differs from the checkpoint's (settings added
// after checkpoints were first written count with the value older runs had). The learning rate
// and the clipping norm may change (the way out of a run that diverged): each change is
// returned as a line to show.
std::vector<std::string> check_same_settings(const nlohmann::json& saved, const nlohmann::json& now,
                                             const std::string& where);

}  // namespace trit::engine
