// The Vulkan backend's attention ops: store_kv (buffer copies), causal GQA attention in chunk
// partials merged in a fixed order, so the result does not depend on the KV tiling, and its
// backward pass.
//
// attention_backward recomputes the softmax from q and k (memory linear in n) in four passes
// over (query segment, K/V segment) pairs, each sum running in key or query order inside one
// invocation and carried between segments through memory: the max of each query's scores,
// then its sums l and E, then dq, then (per query head of a group, query segments in order)
// dk and dv. No atomics: the results do not depend on how the tensors are tiled. A batch whose
// tensors are each one piece (the usual case) takes every sequence at once in register tiles
// (attention_backward_tiled.comp, the same sums in the same order).
#include <algorithm>
#include <cmath>

#include "backend/vulkan/vk_backend.h"

namespace trit::engine::vk {
namespace {

constexpr uint32_t kAttnWg = 64;      // attention, attention_combine, attention_backward_wg
constexpr uint32_t kStoreKvWg = 128;  // store_kv_f16

constexpr uint64_t kAttnCounters = 16384;  // attention_counters(): (query, head) pairs at most

// The spec constants of attention and attention_combine.
std::vector<uint32_t> attention_spec(uint32_t chunk, uint32_t head_dim, uint32_t qt, bool seq_table,
                                     bool kv_f16 = false, bool fuse_combine = false,
                                     uint32_t unroll = 8) {
  std::vector<uint32_t> spec(uint32_t(SpecId::AttnKeyVec) + 1, 0);
  // Decoding: each key row's first 64 elements in 16-byte loads issued together (the UNROLL
  // loop took a round trip to memory each 8 elements).
  spec[uint32_t(SpecId::AttnKeyVec)] = qt == 1 ? (kv_f16 ? 8 : 16) : 0;
  spec[uint32_t(SpecId::AttnUnroll)] = unroll;
  spec[uint32_t(SpecId::AttnFuseCombine)] = fuse_combine ? 1 : 0;
  spec[uint32_t(SpecId::KvF16)] = kv_f16 ? 1 : 0;
  spec[uint32_t(SpecId::WorkgroupSize)] = kAttnWg;
  spec[uint32_t(SpecId::MvTokens)] = qt;
  spec[uint32_t(SpecId::AttnChunk)] = chunk;
  spec[uint32_t(SpecId::MaxHeadDim)] = head_dim;
  spec[uint32_t(SpecId::SeqTable)] = seq_table ? 1 : 0;
  return spec;
}

}  // namespace

void VulkanBackend::store_kv(DeviceTensor& cache_t, const DeviceTensor& src_t, int64_t row0,
                             int64_t n, int64_t pos0) {
  VkTensor& cache = vk_tensor(cache_t);
  const VkTensor& src = vk_tensor(src_t);
  if (n < 0 || pos0 < 0 || pos0 + n > cache.rows() || row0 < 0 || row0 + n > src.rows() ||
      src.cols() != cache.cols()) {
    fail("store_kv: rows ", pos0, "..", pos0 + n, " of cache '", cache.name(), "' (", cache.rows(),
         " x ", cache.cols(), ") from rows ", row0, "..", row0 + n, " of '", src.name(), "' (",
         src.rows(), " x ", src.cols(), ")");
  }
  const uint64_t r0 = uint64_t(row0), c0 = uint64_t(pos0);
  if (src.f16()) fail("store_kv: source '", src.name(), "' holds f16 values");
  if (!cache.f16()) {
    for (const auto& [a, b] :
         row_segments({{&src.tiles(), r0}, {&cache.tiles(), c0}}, uint64_t(n), 0)) {
      rec_.seq().copy(rows_range(src.tiles(), r0 + a, r0 + b),
                      rows_range(cache.tiles(), c0 + a, c0 + b));
    }
    return;
  }
  // f16: converted by a dispatch that binds the cache's whole piece (rows of halves need not
  // start at a bindable offset) and the source rows (staged where theirs do not).
  const Pipeline& p = rec_.pipeline("store_kv_f16", 2, sizeof(StoreKvF16Push), {kStoreKvWg}, 0b01);
  scratch_.act.reset();
  for (const auto& [a, b] :
       row_segments({{&src.tiles(), r0}, {&cache.tiles(), c0}}, uint64_t(n), rec_.max_seg_rows())) {
    const TiledTensor& ct = cache.tiles();
    const size_t piece = ct.piece_of(c0 + a);
    const uint64_t words = (b - a) * uint64_t(cache.cols()) / 2;
    const uint64_t dst0 = (c0 + a - ct.piece(piece).row0) * uint64_t(cache.cols()) / 2;
    rec_.dispatch_flat(
        p, {scratch_.bind_rows(rec_, src.tiles(), r0 + a, r0 + b, true), ct.range(piece)},
        StoreKvF16Push{uint32_t(words), uint32_t(dst0)}, ceil_div(words, kStoreKvWg));
  }
}

void VulkanBackend::attention(DeviceTensor& out_t, const DeviceTensor& q_t, const DeviceTensor& k_t,
                              const DeviceTensor& v_t, std::span<const SeqRows> seqs,
                              const AttnShape& shape) {
  VkTensor& out = vk_tensor(out_t);
  const VkTensor& q = vk_tensor(q_t);
  const VkTensor& kc = vk_tensor(k_t);
  const VkTensor& vc = vk_tensor(v_t);
  // Decoding rows (one sequence too: see rope_store_kv).
  if (!seqs.empty() && seqs[0].n == 1 && attention_decode(out, q, kc, vc, seqs, shape)) return;
  for (const SeqRows& s : seqs) attention_seq(out, q, kc, vc, s, shape);
}

bool VulkanBackend::attention_decode(VkTensor& out, const VkTensor& q, const VkTensor& kc,
                                     const VkTensor& vc, std::span<const SeqRows> seqs,
                                     const AttnShape& shape) {
  const int64_t hd = shape.head_dim, n_head = shape.n_head;
  const uint32_t chunk = std::min(kc.kv_chunk(), vc.kv_chunk());
  const uint64_t r0 = uint64_t(seqs[0].row0), n_q = seqs.size();
  // One query per sequence, in consecutive rows; caches on chunk boundaries; the rows of q and
  // out bindable as they are; the partials within the binding limit.
  uint64_t n_chunks = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    const SeqRows& s = seqs[i];
    if (s.n != 1 || s.row0 != int64_t(r0 + i) || s.pos0 < 0 || s.base < 0 || s.base % chunk != 0 ||
        s.base + s.pos0 + 1 > kc.rows()) {
      return false;
    }
    n_chunks = std::max<uint64_t>(n_chunks, uint64_t(s.pos0) / chunk + 1);
  }
  if (q.cols() != n_head * hd || out.cols() != q.cols() || kc.cols() != shape.kv_cols() ||
      vc.rows() != kc.rows() || vc.cols() != kc.cols() || vc.f16() != kc.f16() ||
      vc.tiles().rows_per_piece() != kc.tiles().rows_per_piece() || shape.n_head_kv <= 0 ||
      n_head % shape.n_head_kv != 0 || r0 + n_q > uint64_t(q.rows()) ||
      r0 + n_q > uint64_t(out.rows()) || !one_piece(q.tiles(), r0, n_q) ||
      !one_piece(out.tiles(), r0, n_q)) {
    return false;
  }
  const uint64_t part_bytes = n_q * uint64_t(n_head) * n_chunks * uint64_t(hd + 2) * 4;
  if (part_bytes > ctx_->binding_limit() ||
      n_q > ctx_->caps().info.max_compute_work_group_count[2]) {
    return false;
  }
  const BufferRange qr = rows_range(q.tiles(), r0, r0 + n_q);
  const BufferRange outr = rows_range(out.tiles(), r0, r0 + n_q);
  const uint64_t align = ctx_->caps().info.min_storage_buffer_offset_alignment;
  if ((align > 0 && (qr.offset % align != 0 || outr.offset % align != 0))) return false;

  const BufferRange counters = attention_counters(n_q * uint64_t(n_head));
  const bool fuse = counters.buffer != nullptr;
  const Pipeline& pa = rec_.pipeline(
      "attention", 7, sizeof(AttentionPush),
      attention_spec(chunk, uint32_t(hd), 1, true, kc.f16(), fuse, tune_.attn_unroll), 0b10111);
  // (base, pos) per query, in host-visible memory kept until the submission ends.
  const BufferRange table =
      scratch_.host.pairs(n_q, [&](size_t i) { return std::pair(seqs[i].base, seqs[i].pos0); });
  scratch_.attn.reset();
  const BufferRange part = scratch_.attn.alloc(part_bytes);
  const float scale = 1.0f / std::sqrt(float(hd));
  for (size_t i = 0; i < kc.tiles().pieces(); ++i) {
    const TiledTensor::Piece& piece = kc.tiles().piece(i);
    bool used = false;  // only pieces that hold keys of some query
    for (const SeqRows& s : seqs) {
      used = used || (uint64_t(s.base) < piece.row1 && uint64_t(s.base + s.pos0) >= piece.row0);
    }
    if (!used) continue;
    const AttentionPush push{uint32_t(n_q),
                             0,
                             0,
                             uint32_t(n_head),
                             uint32_t(shape.n_head_kv),
                             uint32_t(hd),
                             uint32_t(kc.cols()),
                             uint32_t(piece.row0),
                             uint32_t(piece.rows()),
                             uint32_t(n_chunks),
                             scale};
    rec_.seq().dispatch(pa,
                        {qr, kc.tiles().range(i), vc.tiles().range(i), part, table,
                         fuse ? counters : part, fuse ? outr : part},
                        push, uint32_t(n_chunks), uint32_t(n_head), uint32_t(n_q));
  }
  if (fuse) return true;
  const Pipeline& pc = rec_.pipeline("attention_combine", 3, sizeof(AttentionCombinePush),
                                     attention_spec(chunk, uint32_t(hd), 0, true), 0b101);
  const AttentionCombinePush cpush{uint32_t(n_q),     0, 0, uint32_t(n_head), uint32_t(hd),
                                   uint32_t(n_chunks)};
  rec_.seq().dispatch(pc, {part, outr, table}, cpush, uint32_t(n_head), uint32_t(n_q));
  return true;
}

BufferRange VulkanBackend::attention_counters(uint64_t n) {
  if (!tune_.attn_fuse_combine || n > kAttnCounters) return {};
  if (!attn_counters_) {
    attn_counters_ = Buffer(*ctx_, kAttnCounters * 4, MemoryKind::Device, "attention counters");
    Sequence seq(*ctx_, /*profiled=*/false);  // zeroed once; each use leaves them zero
    seq.fill_zero(BufferRange(attn_counters_));
    seq.submit_and_wait();
  }
  return BufferRange(attn_counters_, 0, n * 4);
}

void VulkanBackend::attention_seq(VkTensor& out, const VkTensor& q, const VkTensor& kc,
                                  const VkTensor& vc, const SeqRows& s, const AttnShape& shape) {
  const int64_t hd = shape.head_dim;
  const int64_t n_head = shape.n_head;
  const int64_t row0 = s.row0, n = s.n, pos0 = s.pos0, base = s.base;
  const uint32_t chunk = std::min(kc.kv_chunk(), vc.kv_chunk());
  if (n < 0 || pos0 < 0 || row0 < 0 || base < 0 || row0 + n > q.rows() || row0 + n > out.rows() ||
      q.cols() != n_head * hd || out.cols() != q.cols() || base + pos0 + n > kc.rows() ||
      kc.cols() != shape.kv_cols() || vc.rows() != kc.rows() || vc.cols() != kc.cols() ||
      vc.f16() != kc.f16() || vc.tiles().rows_per_piece() != kc.tiles().rows_per_piece() ||
      shape.n_head_kv <= 0 || n_head % shape.n_head_kv != 0) {
    fail("attention: ", n, " queries at ", pos0, " in rows ", row0, ".. of '", q.name(), "' (",
         q.rows(), " x ", q.cols(), ") against rows from ", base, " of '", kc.name(), "' and '",
         vc.name(), "' (", kc.rows(), " x ", kc.cols(), "), ", n_head, " heads of ", hd, ", ",
         shape.n_head_kv, " KV heads");
  }
  if (n == 0) return;
  // The keys' pieces: the cache's own, whose rows from base lie on chunk boundaries; a base off
  // them (a packed training sequence) takes a copy of its keys and values in one scratch range.
  struct KeyPiece {
    uint64_t row0, row1;
    BufferRange k, v;  // the piece's rows [row0, row1), or empty: bind the cache's own rows
  };
  std::vector<KeyPiece> key_pieces;
  scratch_.attn.reset();
  scratch_.act.reset();
  if (uint64_t(base) % chunk == 0) {
    for (size_t i = 0; i < kc.tiles().pieces(); ++i) {
      key_pieces.push_back({kc.tiles().piece(i).row0, kc.tiles().piece(i).row1, {}, {}});
    }
  } else {
    const uint64_t lo = uint64_t(base), hi = uint64_t(base + pos0 + n);
    const uint64_t row_bytes = kc.tiles().row_bytes(), bytes = (hi - lo) * row_bytes;
    if (bytes > ctx_->binding_limit()) {
      fail("attention: the ", hi - lo, " keys of a sequence at row ", base, " of '", kc.name(),
           "' take ", bytes, " bytes, more than the binding limit of ", ctx_->binding_limit(),
           " bytes; raise --max-buffer-mb or shorten the context");
    }
    KeyPiece kp{lo, hi, scratch_.act.alloc(bytes), scratch_.act.alloc(bytes)};
    for (const auto& [a, b] : row_segments({{&kc.tiles(), lo}, {&vc.tiles(), lo}}, hi - lo, 0)) {
      const uint64_t off = a * row_bytes, size = (b - a) * row_bytes;
      rec_.seq().copy(rows_range(kc.tiles(), lo + a, lo + b),
                      BufferRange(*kp.k.buffer, kp.k.offset + off, size));
      rec_.seq().copy(rows_range(vc.tiles(), lo + a, lo + b),
                      BufferRange(*kp.v.buffer, kp.v.offset + off, size));
    }
    key_pieces.push_back(kp);
  }
  // Queries per workgroup: one when decoding, tune_.attn_qt for prompts and training (each staged
  // chunk of keys serves them all).
  const uint32_t qt = uint64_t(n) >= tune_.attn_qt ? tune_.attn_qt : 1;
  // Decoding a few tokens: the last workgroup of each query merges its partials.
  const BufferRange counters =
      qt == 1 ? attention_counters(uint64_t(n) * uint64_t(n_head)) : BufferRange();
  const bool fuse = counters.buffer != nullptr;
  const Pipeline& pa = rec_.pipeline(
      "attention", 7, sizeof(AttentionPush),
      attention_spec(chunk, uint32_t(hd), qt, false, kc.f16(), fuse, tune_.attn_unroll), 0b10111);
  const Pipeline& pc = rec_.pipeline("attention_combine", 3, sizeof(AttentionCombinePush),
                                     attention_spec(chunk, uint32_t(hd), 0, false), 0b101);
  const float scale = 1.0f / std::sqrt(float(hd));
  const uint64_t limit = ctx_->binding_limit();
  const uint32_t max_z = ctx_->caps().info.max_compute_work_group_count[2];
  const uint64_t r0 = uint64_t(row0);
  for (const auto& [a, b] :
       row_segments({{&q.tiles(), r0}, {&out.tiles(), r0}}, uint64_t(n), rec_.max_seg_rows())) {
    // A sequence's rows inside a batch: staged copies where their offset breaks the alignment.
    const BufferRange qr = scratch_.bind_rows(rec_, q.tiles(), r0 + a, r0 + b, true);
    const BufferRange outr = scratch_.bind_rows(rec_, out.tiles(), r0 + a, r0 + b, false);
    const uint64_t tile_pos0 = uint64_t(pos0) + a;  // position of the segment's row 0
    // Queries per dispatch: their partials (n_head * n_chunks records of hd + 2 floats each)
    // fit the binding limit.
    const uint64_t per_query =
        uint64_t(n_head) * ceil_div(tile_pos0 + (b - a), chunk) * uint64_t(hd + 2) * 4;
    if (per_query > limit) {
      fail("attention: the partials of one query at position ", tile_pos0 + (b - a) - 1, " take ",
           per_query, " bytes, more than the binding limit of ", limit,
           " bytes; raise --max-buffer-mb or shorten the context");
    }
    const uint64_t step = std::min<uint64_t>(limit / per_query, max_z);
    for (uint64_t t0 = 0; t0 < b - a; t0 += step) {
      const uint64_t n_q = std::min(step, b - a - t0);
      const uint64_t end = tile_pos0 + t0 + n_q;  // keys at positions [0, end) are needed
      const uint64_t n_chunks = ceil_div(end, chunk);
      const BufferRange part =
          scratch_.attn.alloc(n_q * uint64_t(n_head) * n_chunks * uint64_t(hd + 2) * 4);
      // The cache rows [base, base + end) piece by piece; kv_r0 is the position of a piece's
      // first row used (pieces and bases lie on chunk boundaries).
      const uint64_t lo = uint64_t(base), hi = uint64_t(base) + end;
      for (const KeyPiece& piece : key_pieces) {
        if (piece.row1 <= lo) continue;
        if (piece.row0 >= hi) break;
        const uint64_t p0 = std::max<uint64_t>(piece.row0, lo), p1 = std::min(piece.row1, hi);
        const bool own = piece.k.buffer == nullptr;
        const BufferRange kr = own ? rows_range(kc.tiles(), p0, p1) : piece.k;
        const BufferRange vr = own ? rows_range(vc.tiles(), p0, p1) : piece.v;
        const AttentionPush push{uint32_t(n_q),
                                 uint32_t(t0),
                                 uint32_t(tile_pos0),
                                 uint32_t(n_head),
                                 uint32_t(shape.n_head_kv),
                                 uint32_t(hd),
                                 uint32_t(kc.cols()),
                                 uint32_t(p0 - lo),
                                 uint32_t(p1 - p0),
                                 uint32_t(n_chunks),
                                 scale};
        rec_.seq().dispatch(pa, {qr, kr, vr, part, qr, fuse ? counters : part, fuse ? outr : part},
                            push, uint32_t(ceil_div(p1 - p0, chunk)), uint32_t(n_head),
                            uint32_t(ceil_div(n_q, qt)));
      }
      if (fuse) continue;
      const AttentionCombinePush cpush{uint32_t(n_q),    uint32_t(t0), uint32_t(tile_pos0),
                                       uint32_t(n_head), uint32_t(hd), uint32_t(n_chunks)};
      rec_.seq().dispatch(pc, {part, outr, part}, cpush, uint32_t(n_head), uint32_t(n_q));
    }
    scratch_.unbind_rows(rec_, outr, out.tiles(), r0 + a, r0 + b);
  }
}

void VulkanBackend::attention_backward(DeviceTensor& dq_t, DeviceTensor& dk_t, DeviceTensor& dv_t,
                                       const DeviceTensor& dout_t, const DeviceTensor& q_t,
                                       const DeviceTensor& k_t, const DeviceTensor& v_t,
                                       std::span<const SeqRows> seqs, const AttnShape& shape) {
  const char* op = "attention_backward";
  const int64_t n_head = shape.n_head, n_kv = shape.n_head_kv;
  if (n_kv <= 0 || n_head % n_kv != 0) {
    fail(op, ": ", n_head, " query heads are not a multiple of ", n_kv, " KV heads");
  }
  for (const SeqRows& s : seqs) {
    if (s.pos0 != 0 || s.base != s.row0 || s.row0 < 0 || s.n < 0) {
      fail(op, ": a sequence at rows ", s.row0, ".. must start at position 0 and be its own keys ",
           "(position ", s.pos0, ", keys from row ", s.base, ")");
    }
    const int64_t end = s.row0 + s.n;
    for (const DeviceTensor* t : std::initializer_list<const DeviceTensor*>{&dq_t, &dout_t, &q_t})
      check_rows_of(*t, end, shape.q_cols(), op);
    for (const DeviceTensor* t :
         std::initializer_list<const DeviceTensor*>{&dk_t, &dv_t, &k_t, &v_t})
      check_rows_of(*t, end, shape.kv_cols(), op);
  }
  if (attention_backward_tiled(vk_tensor(dq_t), vk_tensor(dk_t), vk_tensor(dv_t), vk_tensor(dout_t),
                               vk_tensor(q_t), vk_tensor(k_t), vk_tensor(v_t), seqs, shape)) {
    return;
  }
  for (const SeqRows& s : seqs) {
    if (s.n == 0) continue;
    attention_backward_seq(vk_tensor(dq_t), vk_tensor(dk_t), vk_tensor(dv_t), vk_tensor(dout_t),
                           vk_tensor(q_t), vk_tensor(k_t), vk_tensor(v_t), uint64_t(s.row0),
                           uint64_t(s.n), shape);
  }
}

void VulkanBackend::attention_backward_seq(VkTensor& dq, VkTensor& dk, VkTensor& dv,
                                           const VkTensor& dout, const VkTensor& q,
                                           const VkTensor& k, const VkTensor& v, uint64_t row0,
                                           uint64_t n, const AttnShape& shape) {
  const int64_t hd = shape.head_dim, n_head = shape.n_head, n_kv = shape.n_head_kv;
  const int64_t kv_cols = shape.kv_cols();
  // A workgroup per query (and per key), one sequence and one query head of a group at a time.
  const std::vector<uint32_t> spec = {kAttnWg, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, uint32_t(hd)};
  const Pipeline& pq =
      rec_.pipeline("attention_backward_wg", 6, sizeof(AttentionBackwardPush), spec, 0b001111);
  const Pipeline& pkv =
      rec_.pipeline("attention_backward_kv_wg", 7, sizeof(AttentionBackwardPush), spec, 0b0011111);
  const float scale = 1.0f / std::sqrt(float(hd));
  // Segments in positions of the sequence (its rows from row0).
  const auto q_segs = row_segments({{&q.tiles(), row0}, {&dout.tiles(), row0}, {&dq.tiles(), row0}},
                                   n, rec_.max_seg_rows());
  const auto kv_segs = row_segments(
      {{&k.tiles(), row0}, {&v.tiles(), row0}, {&dk.tiles(), row0}, {&dv.tiles(), row0}}, n,
      rec_.max_seg_rows());
  auto push = [&](uint64_t qa, uint64_t qb, uint64_t ka, uint64_t kb, uint32_t stage, uint32_t g) {
    return AttentionBackwardPush{uint32_t(qb - qa),
                                 uint32_t(qa),
                                 uint32_t(n_head),
                                 uint32_t(n_kv),
                                 uint32_t(hd),
                                 uint32_t(kv_cols),
                                 uint32_t(ka),
                                 uint32_t(kb - ka),
                                 stage,
                                 ka == 0 ? 1u : 0u,
                                 g,
                                 scale};
  };
  scratch_.attn.reset();
  scratch_.act.reset();
  // Bindable ranges of every segment (staged copies where a narrow row breaks the alignment).
  struct QueryRows {
    BufferRange q, dout, dq;
  };
  struct KeyRows {
    BufferRange k, v, dk, dv;
  };
  std::vector<QueryRows> qs;
  std::vector<KeyRows> kvs;
  for (const auto& [qa, qb] : q_segs) {
    qs.push_back({scratch_.bind_rows(rec_, q.tiles(), row0 + qa, row0 + qb, true),
                  scratch_.bind_rows(rec_, dout.tiles(), row0 + qa, row0 + qb, true),
                  scratch_.bind_rows(rec_, dq.tiles(), row0 + qa, row0 + qb, true)});
  }
  for (const auto& [ka, kb] : kv_segs) {
    kvs.push_back({scratch_.bind_rows(rec_, k.tiles(), row0 + ka, row0 + kb, true),
                   scratch_.bind_rows(rec_, v.tiles(), row0 + ka, row0 + kb, true),
                   scratch_.bind_rows(rec_, dk.tiles(), row0 + ka, row0 + kb, true),
                   scratch_.bind_rows(rec_, dv.tiles(), row0 + ka, row0 + kb, true)});
  }
  std::vector<BufferRange> stats;  // per query segment: (rows, n_head, 3) [m, l|inv, E|D]
  for (size_t s = 0; s < q_segs.size(); ++s) {
    const auto [qa, qb] = q_segs[s];
    stats.push_back(scratch_.attn.alloc((qb - qa) * uint64_t(n_head) * 3 * 4));
    for (uint32_t stage = 0; stage < 3; ++stage) {
      for (size_t c = 0; c < kv_segs.size(); ++c) {
        const auto [ka, kb] = kv_segs[c];
        if (ka >= qb) break;  // keys after the segment's last query
        rec_.seq().dispatch(pq, {qs[s].q, qs[s].dout, kvs[c].k, kvs[c].v, stats[s], qs[s].dq},
                            push(qa, qb, ka, kb, stage, 0), uint32_t(n_head), uint32_t(qb - qa));
      }
    }
    scratch_.unbind_rows(rec_, qs[s].dq, dq.tiles(), row0 + qa, row0 + qb);
  }
  // dk, dv: query heads of a group in order, then query segments in order (the CPU's order).
  const int64_t group = n_head / n_kv;
  for (int64_t g = 0; g < group; ++g) {
    for (size_t s = 0; s < q_segs.size(); ++s) {
      const auto [qa, qb] = q_segs[s];
      for (size_t c = 0; c < kv_segs.size(); ++c) {
        const auto [ka, kb] = kv_segs[c];
        if (ka >= qb) break;
        rec_.seq().dispatch(
            pkv, {qs[s].q, qs[s].dout, kvs[c].k, kvs[c].v, stats[s], kvs[c].dk, kvs[c].dv},
            push(qa, qb, ka, kb, 1, uint32_t(g)), uint32_t(kb - ka), uint32_t(n_kv));
      }
    }
  }
  for (size_t c = 0; c < kv_segs.size(); ++c) {
    const uint64_t a = row0 + kv_segs[c].first, b = row0 + kv_segs[c].second;
    scratch_.unbind_rows(rec_, kvs[c].dk, dk.tiles(), a, b);
    scratch_.unbind_rows(rec_, kvs[c].dv, dv.tiles(), a, b);
  }
}

bool VulkanBackend::attention_backward_tiled(VkTensor& dq, VkTensor& dk, VkTensor& dv,
                                             const VkTensor& dout, const VkTensor& q,
                                             const VkTensor& k, const VkTensor& v,
                                             std::span<const SeqRows> seqs,
                                             const AttnShape& shape) {
  const auto& info = ctx_->caps().info;
  const int64_t hd = shape.head_dim;
  // Register tiles: 256 invocations, head_dim a multiple of the 32 dimensions staged at a time
  // and at most 128 (dk and dv of four keys in registers), 29 KiB of shared memory (tiles of
  // 64 queries x 32 keys on the query side, 64 keys x 32 queries on the key side).
  constexpr uint32_t kWg = 256, kQueries = 64, kKeys = 64, kKeyTile = 32;
  constexpr uint64_t kShared = 29824;
  if (!tune_.attn_bwd_tiled || hd % 32 != 0 || hd > 128 || seqs.empty() ||
      info.max_compute_work_group_invocations < kWg || info.max_compute_work_group_size[0] < kWg ||
      info.max_compute_shared_memory_size < kShared ||
      seqs.size() > info.max_compute_work_group_count[2]) {
    return false;
  }
  for (const VkTensor* t :
       std::initializer_list<const VkTensor*>{&dq, &dk, &dv, &dout, &q, &k, &v}) {
    if (t->tiles().pieces() != 1 || t->f16()) return false;
  }
  uint64_t longest = 0;
  for (const SeqRows& s : seqs) longest = std::max(longest, uint64_t(s.n));
  if (longest == 0) return true;
  if (ceil_div(longest, kQueries) > info.max_compute_work_group_count[1] ||
      ceil_div(longest, kKeys) > info.max_compute_work_group_count[0] ||
      uint64_t(shape.n_head) > info.max_compute_work_group_count[0]) {
    return false;
  }
  const uint64_t rows = uint64_t(q.rows());
  const uint64_t stats_bytes = rows * uint64_t(shape.n_head) * 3 * 4;
  if (stats_bytes > ctx_->binding_limit()) return false;

  auto spec = [&](uint32_t stage) {
    std::vector<uint32_t> s(uint32_t(SpecId::AttnStage) + 1, 0);
    s[uint32_t(SpecId::WorkgroupSize)] = kWg;
    s[uint32_t(SpecId::AttnChunk)] = kKeyTile;
    s[uint32_t(SpecId::MaxHeadDim)] = uint32_t(hd);
    s[uint32_t(SpecId::AttnStage)] = stage;
    return s;
  };
  // (first row, length) of each sequence, in host-visible memory kept until the submission ends.
  const BufferRange table = scratch_.host.pairs(
      seqs.size(), [&](size_t i) { return std::pair(seqs[i].row0, seqs[i].n); });
  scratch_.attn.reset();
  const BufferRange stats = scratch_.attn.alloc(stats_bytes);
  const AttentionBackwardTiledPush push{uint32_t(shape.n_head), uint32_t(shape.n_head_kv),
                                        uint32_t(shape.kv_cols()), 1.0f / std::sqrt(float(hd))};
  const BufferRange qr = q.tiles().range(0), dor = dout.tiles().range(0);
  const BufferRange kr = k.tiles().range(0), vr = v.tiles().range(0);
  const BufferRange dqr = dq.tiles().range(0);
  for (uint32_t stage = 0; stage < 3; ++stage) {
    const Pipeline& p = rec_.pipeline("attention_backward_tiled", 7,
                                      sizeof(AttentionBackwardTiledPush), spec(stage), 0b1001111);
    rec_.seq().dispatch(p, {qr, dor, kr, vr, stats, dqr, table}, push, uint32_t(shape.n_head),
                        uint32_t(ceil_div(longest, kQueries)), uint32_t(seqs.size()));
  }
  const Pipeline& pkv = rec_.pipeline("attention_backward_kv_tiled", 8,
                                      sizeof(AttentionBackwardTiledPush), spec(0), 0b10011111);
  rec_.seq().dispatch(
      pkv, {qr, dor, kr, vr, stats, dk.tiles().range(0), dv.tiles().range(0), table}, push,
      uint32_t(ceil_div(longest, kKeys)), uint32_t(shape.n_head_kv), uint32_t(seqs.size()));
  return true;
}

}  // namespace trit::engine::vk
