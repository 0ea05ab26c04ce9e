// `mpirun -np N trit finetune ...`: the ranks of a data-parallel fine-tune over MPI (Open MPI
// from the system; optional at build time).
#pragma once

#include <atomic>
#include <memory>

#include "trit/train.h"

namespace trit::cli {

// The ranks when this process was started by mpirun with more than one rank (MPI initialised
// here), else null. `stop` is polled while a sum waits for the other ranks: a stop request that
// is not answered within 200 ms means a rank is gone (mpirun stops the others when one
// dies). A sum waits at most TRIT_MPI_TIMEOUT seconds (default 300).
class MpiRanks : public DataParallel {
 public:
  static std::unique_ptr<MpiRanks> from_launcher(const std::atomic<bool>* stop);
  // Which of the ranks on this host, and how many there are (0 and 1 without mpirun).
  static int local_rank();
  static int local_size();
  // Marks the run as ended well: MPI then finalises (after a failure the process exits
  // non-zero and mpirun ends the other ranks).
  virtual void done() = 0;
};

}  // namespace trit::cli
