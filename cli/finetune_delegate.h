// trit finetune --delegate: the dataset goes up to the provider's trit serve as a fine-tuning
// job, its progress lines stream back, each checkpoint (and the metrics so far) is copied here
// as it is written, and the adapter, metrics and loss plot come back at the end.
#pragma once

#include "cli/peer_program.h"
#include "trit/trit.hpp"

namespace trit::cli {

// True when the provider finished the job and its files are in place. False (after saying why
// on stderr) when the provider could not be reached or went away and --fallback-local should
// take over: resume_from is then the last checkpoint copied back ("" when none came). A job
// the provider refused or that failed there fails.
bool finetune_delegated(const DelegateOptions& d, const TrainOptions& o, std::string& resume_from);

}  // namespace trit::cli
