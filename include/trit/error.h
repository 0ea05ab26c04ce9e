// trit's one exception type. Every function of the C++ API reports bad input and failures by
// throwing it, with one line a person can act on that names the file, field, option or device
// ("model.gguf: tensor blk.3.ffn_up.weight: data ends at byte 91 MB, file is 64 MB"). Text
// taken from files is shown with control characters escaped.
#pragma once

#include <stdexcept>
#include <string>
#include <utility>

#include "trit/export.h"

namespace trit {

class TRIT_API Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
  // An error in the value of one field of an options struct (ModelOptions::threads,
  // FinetuneOptions::rank, ConvertOptions::type, ...): `option` is the field's name, so that
  // a shell can name it in its own words (the CLI's flag, a JSON request's field).
  Error(const std::string& message, std::string option)
      : std::runtime_error(message), option_(std::move(option)) {}

  // The options field at fault; empty when the error is not about one (a file, a device).
  const std::string& option() const noexcept { return option_; }

 private:
  std::string option_;
};

// A GPU that cannot go on: lost (reset by its driver, removed, hung). Whatever it held is
// gone; a Model opened again (on it, once it is back, or on the CPU) goes on from a checkpoint.
class TRIT_API DeviceLost : public Error {
 public:
  using Error::Error;
};

// A GPU without the memory an allocation or a submission needed; the device still works.
class TRIT_API DeviceOutOfMemory : public Error {
 public:
  using Error::Error;
};

}  // namespace trit
