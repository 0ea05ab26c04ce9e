// The Vulkan backend's recorder: the Sequence every op records into, pipelines, submission, and
// buffers retired while queued work may still read them.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>

#include "backend/vulkan/vk_backend.h"

namespace trit::engine::vk {

Recorder::Recorder(Context& ctx) : ctx_(ctx), seq_(std::make_unique<Sequence>(ctx)) {
  const uint32_t* max = ctx_.caps().info.max_compute_work_group_count;
  max_seg_rows_ = std::min({max[0], max[1], max[2]});
}

Recorder::~Recorder() = default;

const Pipeline& Recorder::pipeline(std::string_view shader, uint32_t bindings, uint32_t push_bytes,
                                   std::vector<uint32_t> spec, uint32_t readonly) {
  PipelineDesc d;
  d.shader = shader;
  d.bindings = bindings;
  d.push_bytes = push_bytes;
  d.spec = std::move(spec);
  d.readonly = readonly;
  return ctx_.pipeline(d);
}

namespace {
double now_us() {
  return std::chrono::duration<double, std::micro>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace

void Recorder::submit() {
  // TRIT_VK_RERUN=N (tuning): after a submission of 32 or more commands, runs the same
  // commands N times more and prints the step's wall time since the last submission, its
  // submit-and-wait time and the time of one more run (the GPU's alone: nothing is recorded).
  static const int rerun = [] {
    const char* v = std::getenv("TRIT_VK_RERUN");
    return v ? std::atoi(v) : 0;
  }();
  const double t0 = rerun > 0 ? now_us() : 0;
  seq_->submit_and_wait();
  if (rerun > 0 && seq_->commands() >= 32 && probes_ < 40) {
    ++probes_;
    const double t1 = now_us();
    for (int i = 0; i < rerun; ++i) seq_->submit_and_wait();
    std::fprintf(stderr,
                 "rerun: %zu commands, %zu barriers, step %.1f us, submit+wait %.1f us, "
                 "one more run %.1f us\n",
                 seq_->commands(), seq_->barriers(), t0 - last_submit_us_, t1 - t0,
                 (now_us() - t1) / rerun);
  }
  seq_->reset();
  retired_.clear();
  if (rerun > 0) last_submit_us_ = now_us();
}

void Recorder::abandon() {
  seq_->reset();
  retired_.clear();
}

void Recorder::retire(TiledTensor t) {
  if (seq_->commands() > 0) retired_.push_back(std::move(t));
}

}  // namespace trit::engine::vk
