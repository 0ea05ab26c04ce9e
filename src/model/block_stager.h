// BlockStager: a streamed block's weights (or a piece of the LM head's rows) read from the file
// into one of two buffers, on a thread of its own while the previous one computes.
//
// Streaming a block through the file mapping (its pages released after each pass and faulted in
// again for the next) costs the CPU's threads the page faults inside their products: on a
// 2-core x86 VM, 18 ms to fault in 36 MB (one 2B4T block) against 3-4 ms to pread the same bytes
// from the page cache into a buffer. The buffers hold two blocks, what a streamed pass kept
// resident before (the block computing and the one read ahead), and are backed by huge pages
// where the kernel allows.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "io/gguf.h"
#include "model/model.h"

namespace trit::engine {

class BlockStager {
 public:
  // blocks: the model's, whose linear layers' data pointers lie in file's mapping (those that
  // do not, converted at load, are used where they are). head: the LM head, read in pieces of
  // as many rows as a buffer holds (none when it is not in the mapping).
  BlockStager(const GgufFile& file, const std::vector<BlockWeights>& blocks,
              const FloatMatrix& head);
  ~BlockStager();
  BlockStager(const BlockStager&) = delete;
  BlockStager& operator=(const BlockStager&) = delete;

  // What a buffer holds: units [0, blocks) are the blocks, the next head_pieces() the head's
  // pieces in order.
  struct Staged {
    BlockWeights w;         // a block's weights pointing into the buffer
    FloatMatrix head;       // a head piece: its rows (n_out of them) in the buffer
    int64_t head_row0 = 0;  // the piece's first row of the head
  };
  int64_t head_pieces() const { return int64_t(parts_.size()) - n_blocks_; }
  int64_t head_piece_rows() const { return head_piece_rows_; }

  // Starts reading unit u into a buffer that no pass holds, unless one already holds it; a
  // buffer that no pass holds and that is not the target gives its memory back (so that the
  // LM head's pass finds one block resident, not two). Returns at once; does nothing when both
  // buffers are held. u outside the units only gives the idle buffers' memory back.
  void ahead(int64_t u);
  // Unit u with its data in a buffer, held until give(u); reads it first (or waits for its
  // read) when needed. Null when both buffers are held by other passes: the caller reads the
  // mapping instead. Throws trit::Error when the file cannot be read.
  const Staged* take(int64_t u);
  void give(int64_t u);
  // The bytes one buffer holds (the largest block's parts, each 64-byte aligned).
  uint64_t buffer_bytes() const { return capacity_; }

 private:
  struct Part {
    const uint8_t* src = nullptr;  // in the mapping
    uint64_t n = 0;
    uint64_t at = 0;  // offset in a buffer
  };
  enum class State { Empty, Reading, Ready, Failed };
  struct Slot {
    uint8_t* base = nullptr;  // the buffer's mapping
    uint8_t* buf = nullptr;   // its start on a huge-page boundary
    int64_t block = -1;
    State state = State::Empty;
    int held = 0;
    std::string error;
    Staged view;  // the unit's weights pointing into buf
  };
  // Called with mu_ held.
  void start();           // the buffers and the reading thread, on first use
  Slot* find(int64_t l);  // the buffer holding or reading block l
  Slot* choose();         // one that no pass holds and none reads into, empty first; or null
  void begin_read(Slot& s, int64_t l);
  void drop_idle(const Slot* keep);  // gives back the memory of buffers no pass holds
  void run();                        // the reading thread

  const GgufFile& file_;
  const std::vector<BlockWeights>& blocks_;
  const FloatMatrix head_;
  int64_t n_blocks_ = 0;
  int64_t head_piece_rows_ = 0;
  std::vector<std::vector<Part>> parts_;  // per unit
  uint64_t capacity_ = 0;
  uint64_t mapped_bytes_ = 0;  // of each buffer's mapping
  Slot slots_[2];
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Slot*> queue_;
  bool stop_ = false;
  std::thread reader_;
};

}  // namespace trit::engine
