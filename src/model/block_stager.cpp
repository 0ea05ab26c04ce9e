#include "model/block_stager.h"

#include <sys/mman.h>

#include <algorithm>
#include <exception>

#include "core/dtype.h"
#include "core/error.h"

namespace trit::engine {
namespace {

constexpr uint64_t kHugePage = 2u << 20;

// The bytes a linear layer reads in place: its data pointer and size.
std::pair<const uint8_t*, uint64_t> linear_bytes(const LinearWeight& lw) {
  if (lw.is_float()) {
    return {lw.f.data, tensor_bytes(lw.f.type, lw.f.n_in, lw.f.n_in * lw.f.n_out).value_or(0)};
  }
  const int64_t w = lw.m.stored_in();
  return {lw.m.data, tensor_bytes(lw.m.type, w, w * lw.m.n_out).value_or(0)};
}

}  // namespace

BlockStager::BlockStager(const GgufFile& file, const std::vector<BlockWeights>& blocks,
                         const FloatMatrix& head)
    : file_(file), blocks_(blocks), head_(head), n_blocks_(int64_t(blocks.size())) {
  for (const BlockWeights& b : blocks) {
    std::vector<Part> parts;
    uint64_t at = 0;
    const LinearWeight* ws[] = {&b.q, &b.k, &b.v, &b.o, &b.gate, &b.up, &b.down};
    for (const LinearWeight* lw : ws) {
      const std::pair<const uint8_t*, uint64_t> bytes = linear_bytes(*lw);
      const uint8_t* p = bytes.first;
      const uint64_t n = bytes.second;
      if (!p || n == 0 || !file.maps(p)) continue;
      if (std::any_of(parts.begin(), parts.end(), [&](const Part& q) { return q.src == p; })) {
        continue;  // one tensor serving two layers
      }
      parts.push_back({p, n, at});
      at += (n + 63) / 64 * 64;
    }
    capacity_ = std::max(capacity_, at);
    parts_.push_back(std::move(parts));
  }
  // The head in pieces of whole rows that fit a buffer.
  const uint64_t row = uint64_t(row_bytes(head.type, head.n_in));
  if (head.data && file.maps(head.data) && row > 0 && capacity_ >= row) {
    head_piece_rows_ = int64_t(capacity_ / row);
    for (int64_t r0 = 0; r0 < head.n_out; r0 += head_piece_rows_) {
      const int64_t r1 = std::min(head.n_out, r0 + head_piece_rows_);
      parts_.push_back({{head.data + uint64_t(r0) * row, uint64_t(r1 - r0) * row, 0}});
    }
  }
}

BlockStager::~BlockStager() {
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (reader_.joinable()) reader_.join();
  for (Slot& s : slots_) {
    if (s.base) munmap(s.base, mapped_bytes_);
  }
}

void BlockStager::start() {
  if (reader_.joinable() || capacity_ == 0) return;
  // Each buffer on huge-page boundaries, so that the kernel may back it with huge pages (fewer
  // faults as it fills, fewer TLB misses in the products).
  const uint64_t size = (capacity_ + kHugePage - 1) / kHugePage * kHugePage;
  mapped_bytes_ = size + kHugePage;
  for (Slot& s : slots_) {
    void* m =
        mmap(nullptr, mapped_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
      fail(file_.path(), ": cannot allocate ", mapped_bytes_,
           " bytes to stream a block of weights through");
    }
    s.base = static_cast<uint8_t*>(m);
    s.buf = reinterpret_cast<uint8_t*>((uintptr_t(m) + kHugePage - 1) / kHugePage * kHugePage);
    madvise(s.buf, size, MADV_HUGEPAGE);
  }
  reader_ = std::thread([this] { run(); });
}

void BlockStager::run() {
  std::unique_lock lk(mu_);
  for (;;) {
    cv_.wait(lk, [&] { return stop_ || !queue_.empty(); });
    if (stop_) return;
    Slot& s = *queue_.front();
    queue_.erase(queue_.begin());
    const std::vector<Part>& parts = parts_[size_t(s.block)];
    lk.unlock();
    std::string error;  // a pass that takes the block rethrows it
    try {
      for (const Part& p : parts) file_.read(p.src, p.n, s.buf + p.at);
    } catch (const std::exception& e) {
      error = e.what();
    }
    lk.lock();
    s.error = std::move(error);
    s.state = s.error.empty() ? State::Ready : State::Failed;
    cv_.notify_all();
  }
}

BlockStager::Slot* BlockStager::find(int64_t l) {
  for (Slot& s : slots_) {
    if (s.block == l && s.state != State::Empty) return &s;
  }
  return nullptr;
}

BlockStager::Slot* BlockStager::choose() {
  Slot* best = nullptr;
  for (Slot& s : slots_) {
    if (s.held > 0 || s.state == State::Reading) continue;
    if (!best || s.state == State::Empty) best = &s;
  }
  return best;
}

void BlockStager::begin_read(Slot& s, int64_t u) {
  s.block = u;
  s.state = State::Reading;
  s.error.clear();
  if (u < n_blocks_) {
    BlockWeights& w = s.view.w;
    w = blocks_[size_t(u)];
    LinearWeight* ws[] = {&w.q, &w.k, &w.v, &w.o, &w.gate, &w.up, &w.down};
    for (LinearWeight* lw : ws) {
      const uint8_t*& p = lw->is_float() ? lw->f.data : lw->m.data;
      for (const Part& part : parts_[size_t(u)]) {
        if (part.src == p) {
          p = s.buf + part.at;
          break;
        }
      }
      lw->f.pages = nullptr;  // the buffer is not the file's mapping
    }
  } else {
    const int64_t r0 = (u - n_blocks_) * head_piece_rows_;
    s.view.head = head_;
    s.view.head.data = s.buf;
    s.view.head.n_out = std::min(head_.n_out - r0, head_piece_rows_);
    s.view.head.pages = nullptr;
    s.view.head_row0 = r0;
  }
  queue_.push_back(&s);
  cv_.notify_all();
}

void BlockStager::drop_idle(const Slot* keep) {
  for (Slot& s : slots_) {
    if (&s == keep || s.held > 0 || s.state == State::Reading || s.state == State::Empty) continue;
    madvise(s.buf, mapped_bytes_ - kHugePage, MADV_DONTNEED);
    s.state = State::Empty;
    s.block = -1;
  }
}

void BlockStager::ahead(int64_t l) {
  std::lock_guard lk(mu_);
  if (l < 0 || l >= int64_t(parts_.size()) || parts_[size_t(l)].empty()) {
    if (reader_.joinable()) drop_idle(nullptr);
    return;
  }
  start();
  Slot* s = find(l);
  if (!s) {
    s = choose();
    if (!s) return;
    begin_read(*s, l);
  }
  drop_idle(s);
}

const BlockStager::Staged* BlockStager::take(int64_t l) {
  if (l < 0 || l >= int64_t(parts_.size()) || parts_[size_t(l)].empty()) return nullptr;
  std::unique_lock lk(mu_);
  start();
  for (;;) {
    if (Slot* s = find(l)) {
      if (s->state == State::Reading) {
        cv_.wait(lk);
        continue;
      }
      if (s->state == State::Failed) {
        const std::string error = s->error;
        s->state = State::Empty;
        s->block = -1;
        fail(error);
      }
      ++s->held;
      return &s->view;
    }
    if (Slot* s = choose()) {
      begin_read(*s, l);
      continue;
    }
    if (slots_[0].held > 0 && slots_[1].held > 0) return nullptr;
    cv_.wait(lk);  // a buffer is being filled for another block: wait for it
  }
}

void BlockStager::give(int64_t l) {
  std::lock_guard lk(mu_);
  for (Slot& s : slots_) {
    if (s.block == l && s.held > 0) {
      --s.held;
      break;
    }
  }
  cv_.notify_all();
}

}  // namespace trit::engine
