// Sequence: records many dispatches, copies and fills, then submits them and waits on a fence
// (Kompute's "sequence"). The recording goes out in chunks of command buffers as it grows, so
// the device starts on the first ops while the host records the rest; each chunk begins with
// a barrier that orders it after the earlier ones. Barriers between commands that touch
// overlapping bytes of the same buffer (one of them writing) are inserted automatically; a
// binding counts as written unless the pipeline marks it read-only (PipelineDesc::readonly).
// Buffers named in a recording must stay alive until submit_and_wait returns. A recording equal
// to the last one submitted replays that one's command buffers (see replay_ below).
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
  // Commands (barriers included) of the last submitted recording that replayed the one before.
  size_t replayed() const { return replayed_; }

 private:
  struct Access {
    VkBuffer buffer;
    uint64_t begin, end;
    bool write;
  };
  // A buffer range as a recorded command names it.
  struct Bound {
    VkBuffer buffer = VK_NULL_HANDLE;
    uint64_t serial = 0, offset = 0, size = 0;
    bool operator==(const Bound&) const = default;
  };
  // One command of a recording, as the replay compares and re-records it: its bound ranges and
  // push-constant bytes lie in its Recording's arrays.
  struct Command {
    enum class Kind : uint8_t { Dispatch, Copy, Fill, Barrier };
    Kind kind = Kind::Barrier;
    const Pipeline* pipeline = nullptr;  // Dispatch
    uint32_t groups[3] = {0, 0, 0};
    uint32_t bound_first = 0, bound_count = 0;
    uint32_t push_first = 0, push_size = 0;
  };
  // A command buffer that went out (or goes out last) and the commands it holds: those from the
  // end of the chunk before it up to `end`.
  struct Chunk {
    VkCommandBuffer cb;
    size_t end;
  };
  struct Recording {
    std::vector<Command> commands;
    std::vector<Bound> bound;
    std::vector<uint8_t> push;
    std::vector<Chunk> chunks;
    void clear() {
      commands.clear();
      bound.clear();
      push.clear();
      chunks.clear();
    }
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
  // Appends a command to the recording; true when it equals the previous recording's command
  // at the same place, so that the command buffer recorded then serves (nothing to record).
  bool add(Command c, std::span<const Bound> bound, const void* push);
  // Leaves replay: the open chunk's first commands (up to command `upto`) go into a command
  // buffer of their own; the previous recording's chunks not yet submitted are let go.
  void diverge(size_t upto);
  // Records command i of `rec` into cmd_.
  void issue(const Recording& rec, size_t i);
  // Command i of a equals command j of b.
  static bool same(const Recording& a, size_t i, const Recording& b, size_t j);
  // Opens cmd_ for a new chunk and records the barrier that orders it after earlier work.
  void open_command_buffer();
  // Hands the open chunk to the queue (without waiting).
  void close_chunk();
  // A command buffer to record into: a free one, or a new one.
  VkCommandBuffer take_command_buffer();
  // Resets cb and keeps it for take_command_buffer.
  void give_back(VkCommandBuffer cb);

  Context& ctx_;
  // The recording goes out in chunks of kChunkCommands commands, each in its own command
  // buffer, submitted as soon as it is full; submit_and_wait sends the last and waits.
  // The first chunk is small, so that the device starts soon after the host (a decoding
  // step's first chunk would otherwise keep it idle for 64 recordings); each next one doubles,
  // up to kChunkCommands. TRIT_VK_CHUNK=<first>,<most> overrides (tuning).
  static constexpr size_t kFirstChunk = 8;
  static constexpr size_t kChunkCommands = 64;
  size_t chunk_size() const {
    return std::min(first_chunk_ << std::min<size_t>(rec_.chunks.size(), 16), max_chunk_);
  }
  size_t first_chunk_ = kFirstChunk, max_chunk_ = kChunkCommands;
  bool host_profiled_ = false;  // the context profiles and this sequence counts
  bool fault_counted_ = true;   // submissions count toward TRIT_VK_FAULT's N (not transfers)
  // Replay: a recording equal to the one before it (decoding steps, training steps of one
  // shape: the same pipelines, ranges, push constants and group counts; only the contents of
  // buffers differ) submits the command buffers recorded then instead of recording again, a
  // chunk as soon as its commands have matched. The first command that differs leaves replay:
  // its chunk is recorded from its start. Needs push descriptors (no descriptor sets to keep);
  // off with a profile and with TRIT_VK_REPLAY=0. TRIT_VK_REPLAY_LOG=1 prints where recordings
  // differ from the one before (tuning).
  bool replay_ = false;
  bool matching_ = false;  // every command of this recording so far equals the previous one's
  Recording rec_;          // this recording: its commands and the chunks that went out
  Recording prev_;         // the last recording that was submitted whole
  size_t replayed_ = 0;    // commands of the last submitted recording that were replayed
  std::vector<VkCommandBuffer> all_cbs_;   // every command buffer this sequence allocated
  std::vector<VkCommandBuffer> free_cbs_;  // those neither recording nor kept for replay
  size_t matched_ = 0;                     // commands that matched before this recording diverged
  size_t chunk_commands_ = 0;              // commands in the open chunk
  size_t chunk_first_ = 0;  // the open chunk's first command (an index into rec_.commands)
  VkCommandBuffer cmd_ = VK_NULL_HANDLE;  // the open chunk's command buffer (none while matching)
  VkFence fence_ = VK_NULL_HANDLE;
  struct Pool {
    VkDescriptorPool pool;
    uint32_t sets, descriptors;            // capacity
    uint32_t used_sets, used_descriptors;  // since the last reset
  };
  std::vector<Pool> pools_;
  size_t pool_ = 0;  // the pool sets come from now
  std::vector<Access> since_barrier_;
  bool recording_ = false;  // a chunk is open
  bool ended_ = false;
  bool waited_ = false;   // the last submission's fence signalled
  size_t submitted_ = 0;  // chunks of this recording handed to the queue
  size_t commands_ = 0;
  size_t barriers_ = 0;
  // Profiling (Context::profile): timestamp 0 at the start, then one per command.
  VkQueryPool queries_ = VK_NULL_HANDLE;
  uint32_t query_capacity_ = 0;
  std::vector<const std::string*> stamped_;  // the command of each timestamp after the first
  double record_start_ns_ = 0;
};

}  // namespace trit::engine::vk
