// The ranks of a data-parallel fine-tune (DESIGN: one process per device, the same run on each).
// Every rank loads the same model and data, walks the same batches and takes its share of each
// (rows r with r % size == rank); the ranks sum their losses and LoRA gradients each optimizer
// step, so that every rank takes the same update. The transport is the application's: the CLI
// implements this over MPI (cli/mpi_collective.cpp), an app over whatever communicator it has.
#pragma once

#include <span>

#include "core/error.h"

namespace trit::engine {

// What sum() throws when the other ranks do not answer: the step under way is lost, the one
// before is whole.
struct RanksLost : Error {
  using Error::Error;
};

class Collective {
 public:
  virtual ~Collective() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // Sums v over the ranks in place: afterwards every rank holds the same values, bit for bit.
  // Throws RanksLost when the other ranks do not answer in bounded time.
  virtual void sum(std::span<double> v) = 0;
  virtual void sum(std::span<float> v) = 0;
};

}  // namespace trit::engine
