#include "cli/mpi_ranks.h"

#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>

#include "trit/error.h"

#ifdef TRIT_HAVE_MPI
#include <mpi.h>
#endif

namespace trit::cli {
namespace {

// The launcher's environment: Open MPI's names, then the PMI names MPICH and others set.
int env_int(const char* a, const char* b, int fallback) {
  for (const char* name : {a, b}) {
    if (const char* v = std::getenv(name)) return std::atoi(v);
  }
  return fallback;
}

int world_size() {
  return env_int("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", 1);
}

#ifdef TRIT_HAVE_MPI
class Ranks final : public MpiRanks {
 public:
  explicit Ranks(const std::atomic<bool>* stop) : stop_(stop) {
    int provided = 0;
    MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    if (const char* t = std::getenv("TRIT_MPI_TIMEOUT")) timeout_s_ = std::atof(t);
    if (!(timeout_s_ > 0)) timeout_s_ = 300;
  }
  // After a failure MPI is left as it is: the error is printed and the process exits non-zero,
  // on which mpirun ends the other ranks (an MPI_Abort here would end this one before it says
  // why).
  ~Ranks() override {
    if (done_) MPI_Finalize();
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void sum(std::span<double> v) override { reduce(v.data(), int64_t(v.size()), MPI_DOUBLE); }
  void sum(std::span<float> v) override { reduce(v.data(), int64_t(v.size()), MPI_FLOAT); }
  void done() override { done_ = true; }

 private:
  // Sums to rank 0, which broadcasts: every rank gets rank 0's bits. Pieces of at most 2^30
  // elements (MPI counts are ints).
  void reduce(void* data, int64_t n, MPI_Datatype type) {
    const int64_t width = type == MPI_DOUBLE ? 8 : 4, piece = int64_t(1) << 30;
    for (int64_t at = 0; at < n; at += piece) {
      char* p = static_cast<char*>(data) + at * width;
      const int count = int(std::min(piece, n - at));
      MPI_Request r;
      if (rank_ == 0) {
        MPI_Ireduce(MPI_IN_PLACE, p, count, type, MPI_SUM, 0, MPI_COMM_WORLD, &r);
      } else {
        MPI_Ireduce(p, nullptr, count, type, MPI_SUM, 0, MPI_COMM_WORLD, &r);
      }
      wait(r, "a sum");
      MPI_Ibcast(p, count, type, 0, MPI_COMM_WORLD, &r);
      wait(r, "its result");
    }
  }
  void wait(MPI_Request& r, const char* what) {
    using clock = std::chrono::steady_clock;
    const auto start = clock::now();
    auto stopped_at = clock::time_point::max();
    for (int flag = 0;;) {
      MPI_Test(&r, &flag, MPI_STATUS_IGNORE);
      if (flag) return;
      const auto now = clock::now();
      if (stop_ && stop_->load() && stopped_at == clock::time_point::max()) stopped_at = now;
      const double waited = std::chrono::duration<double>(now - start).count();
      // All ranks stopped together (Ctrl-C) finish a sum at once; one that stays unanswered
      // after a stop request waits for a rank that is gone (mpirun stops the others then).
      if (now - stopped_at > std::chrono::milliseconds(200) || waited > timeout_s_) {
        throw Error("data-parallel: rank " + std::to_string(rank_) + " of " +
                    std::to_string(size_) + " waited " + std::to_string(int(waited)) +
                    " s for the other ranks' " + what +
                    (now - stopped_at > std::chrono::milliseconds(200)
                         ? " and was asked to stop meanwhile (a rank is gone)"
                         : " (TRIT_MPI_TIMEOUT; a rank is gone or hangs)"));
      }
      std::this_thread::sleep_for(std::chrono::microseconds(waited < 0.01 ? 0 : 200));
    }
  }
  const std::atomic<bool>* stop_;
  int rank_ = 0, size_ = 1;
  double timeout_s_ = 300;
  bool done_ = false;
};
#endif

}  // namespace

int MpiRanks::local_rank() {
  return env_int("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", 0);
}

int MpiRanks::local_size() {
  return env_int("OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", 1);
}

std::unique_ptr<MpiRanks> MpiRanks::from_launcher(const std::atomic<bool>* stop) {
  const int n = world_size();
  if (n <= 1) return nullptr;
#ifdef TRIT_HAVE_MPI
  return std::make_unique<Ranks>(stop);
#else
  (void)stop;
  throw Error("started by mpirun with " + std::to_string(n) +
              " ranks, but this trit was built without MPI (install libopenmpi-dev and "
              "rebuild)");
#endif
}

}  // namespace trit::cli
