// trit's one exception type. Every function of the C++ API reports bad input and failures by
// throwing it, with one line a person can act on that names the file, field, option or device
// ("model.gguf: tensor blk.3.ffn_up.weight: data ends at byte 91 MB, file is 64 MB"). Text
// taken from files is shown with control characters escaped.
#pragma once

#include <stdexcept>

#include "trit/export.h"

namespace trit {

class TRIT_API Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace trit
