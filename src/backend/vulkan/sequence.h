// Sequence: records many dispatches, copies and fills, then submits them and waits on a fence
// (Kompute's "sequence"). The recording goes out in chunks of command buffers as it grows, so
// the device starts on the first ops while the host records the rest; each chunk begins with
// a barrier that orders it after the earlier ones. Barriers between commands that touch
// overlapping bytes of the same buffer (one of them writing) are inserted automatically; a
// binding counts as written unless the pipeline marks it read-only (PipelineDesc::readonly).
// Buffers named in a recording must stay alive until submit_and_wait returns.
//
// Callers keep group counts within caps().info.max_compute_work_group_count (no splitting
// here) and bind ranges no larger than the context's binding limit (checked).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "backend/vulkan/buffer.h"
#include "backend/vulkan/vk_loader.h"

namespace trit::engine::vk {

class Context;
class Pipeline;

class Sequence {
 public:
  // profiled: time each command when the context profiles (Context::profile) and count its
  // submissions for fault injection (Context::injected_fault); transfers pass false.
  explicit Sequence(Context& ctx, bool profiled = true);
  ~Sequence();
  Sequence(const Sequence&) = delete;
  Sequence& operator=(const Sequence&) = delete;

  // Binds `bindings` to 0..n-1 (n must equal the pipeline's), pushes `push_size` bytes (must
  // equal the pipeline's push_bytes) and records a dispatch of gx * gy * gz groups.
  void dispatch(const Pipeline& p, std::initializer_list<BufferRange> bindings, const void* push,
                size_t push_size, uint32_t gx, uint32_t gy = 1, uint32_t gz = 1);
  // The same with a typed push-constant struct.
  template <class Push>
  requires std::is_class_v<Push> && std::is_trivially_copyable_v<Push>
  void dispatch(const Pipeline& p, std::initializer_list<BufferRange> bindings, const Push& push,
                uint32_t gx, uint32_t gy = 1, uint32_t gz = 1) {
    dispatch(p, bindings, &push, sizeof(Push), gx, gy, gz);
  }
  // Copies src to dst (equal sizes).
  void copy(BufferRange src, BufferRange dst);
  // Sets dst to zero bytes (offset and size multiples of 4).
  void fill_zero(BufferRange dst);
  // A full compute/transfer memory barrier; automatic ones make calling it rarely needed.
  void barrier();

  // Ends the recording, submits it and waits for it to finish; the results are then visible
  // to the host through mapped buffers. May be called again to run the same commands again.
  void submit_and_wait();
  // Forgets the recording (and frees its descriptor sets) so the sequence records anew.
  void reset();

  size_t commands() const { return commands_; }  // dispatches, copies and fills recorded
  size_t barriers() const { return barriers_; }  // barriers recorded (automatic or not)

 private:
  struct Access {
    VkBuffer buffer;
    uint64_t begin, end;
    bool write;
  };
  void begin_if_needed();
  // Counts a recorded command; submits the chunk (without waiting) once it is full.
  void end_command();
  // With a profile: a timestamp after the command just recorded, charged to `name`.
  void stamp(const std::string* name);
  void collect_profile(double record_ns, double wait_ns);
  // Records a barrier first when `acc` conflicts with an access since the last barrier.
  void touch(std::span<const Access> acc);
  VkDescriptorSet allocate_set(VkDescriptorSetLayout layout, uint32_t descriptors);
  void record_barrier(VkPipelineStageFlags src_stage, VkAccessFlags src_access,
                      VkPipelineStageFlags dst_stage, VkAccessFlags dst_access);
  void check_range(const BufferRange& r, const char* what) const;

  Context& ctx_;
  // The recording goes out in chunks of kChunkCommands commands, each in its own command
  // buffer, submitted as soon as it is full; submit_and_wait sends the last and waits.
  // The first chunk is small, so that the device starts soon after the host (a decoding
  // step's first chunk would otherwise keep it idle for 64 recordings); each next one doubles,
  // up to kChunkCommands. TRIT_VK_CHUNK=<first>,<most> overrides (tuning).
  static constexpr size_t kFirstChunk = 8;
  static constexpr size_t kChunkCommands = 64;
  size_t chunk_size() const {
    return std::min(first_chunk_ << std::min<size_t>(chunk_, 16), max_chunk_);
  }
  size_t first_chunk_ = kFirstChunk, max_chunk_ = kChunkCommands;
  bool host_profiled_ = false;  // the context profiles and this sequence counts
  bool fault_counted_ = true;   // submissions count toward TRIT_VK_FAULT's N (not transfers)
  std::vector<VkCommandBuffer> cmds_;
  size_t chunk_ = 0;           // the chunk being recorded (chunks before it are submitted)
  size_t chunks_ = 0;          // chunks of the ended recording
  size_t chunk_commands_ = 0;  // commands in the current chunk
  VkCommandBuffer cmd_ = VK_NULL_HANDLE;  // cmds_[chunk_] while recording
  VkFence fence_ = VK_NULL_HANDLE;
  struct Pool {
    VkDescriptorPool pool;
    uint32_t sets, descriptors;            // capacity
    uint32_t used_sets, used_descriptors;  // since the last reset
  };
  std::vector<Pool> pools_;
  size_t pool_ = 0;  // the pool sets come from now
  std::vector<Access> since_barrier_;
  bool recording_ = false;
  bool ended_ = false;
  size_t commands_ = 0;
  size_t barriers_ = 0;
  // Profiling (Context::profile): timestamp 0 at the start, then one per command.
  VkQueryPool queries_ = VK_NULL_HANDLE;
  uint32_t query_capacity_ = 0;
  std::vector<const std::string*> stamped_;  // the command of each timestamp after the first
  double record_start_ns_ = 0;
};

}  // namespace trit::engine::vk
