// The Vulkan backend's recorder: the Sequence every op records into, pipelines, submission, and
// buffers retired while queued work may still read them.
#include <algorithm>

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

void Recorder::submit() {
  seq_->submit_and_wait();
  seq_->reset();
  retired_.clear();
}

void Recorder::abandon() {
  seq_->reset();
  retired_.clear();
}

void Recorder::retire(TiledTensor t) {
  if (seq_->commands() > 0) retired_.push_back(std::move(t));
}

}  // namespace trit::engine::vk
