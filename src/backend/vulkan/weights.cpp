// The Vulkan backend's weight cache: every host weight is uploaded the first time an op uses
// it and kept, keyed by its host address (and the rope table, grown as positions are asked).
// Ternary layers (TQ2_0, I2_S) become T2 codes (the shaders' layout, still 2 bits a weight), TQ1_0
// stays as it is (1.6 bits a weight: the decoding matvec reads it, t2() gives the other products
// T2 codes of one layer at a time);
// float matrices keep their layout, except q6_K, which becomes f32 (exact: every q6_K value d *
// scale * q is an f32 product computed as the CPU's dequantisation computes it).
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "backend/vulkan/vk_backend.h"
#include "core/bytes.h"
#include "core/half.h"
#include "core/quant.h"

namespace trit::engine::vk {
namespace {

constexpr uint64_t kUploadChunk = 8ull << 20;  // host bytes converted per upload step
constexpr uint64_t kMinRopeRows = 256;
constexpr int64_t kTQ1Words = kTQ1DOffset / 4;  // a TQ1_0 block's qs and qh bytes, as words

// The T2 word of the 2-bit fields at bit `shift` of 16 bytes (field k: weight k's code), four
// bytes at a time.
uint32_t t2_word(const uint8_t* bytes, int64_t shift) {
  uint32_t word = 0;
  for (int64_t e = 0; e < 4; ++e) {
    const uint32_t c = (load_u32(bytes + 4 * e) >> shift) & 0x03030303u;  // a code a byte
    const uint32_t t = c | (c >> 6);                                      // codes 0, 1: bits 0..3
    word |= ((t & 0xFu) | ((t >> 12) & 0xF0u)) << (8 * e);
  }
  return word;
}

// Row r of a TQ1_0, TQ2_0 or I2_S matrix as T2 words (n_in / 16): weight j's code at bits 2 * (j %
// 16) of word j / 16. Codes are copied unchanged (3, invalid, stays 3 as the CPU decodes it).
void t2_row(const TernaryMatrix& w, int64_t r, uint32_t* out) {
  const int64_t n = w.n_in;
  std::fill(out, out + n / 16, 0u);
  auto put = [&](int64_t j, uint32_t code) { out[j / 16] |= code << (2 * (j % 16)); };
  if (w.type == DType::TQ1_0) {
    const uint8_t* row = w.data + r * row_bytes(DType::TQ1_0, n);
    uint8_t codes[kQK_K];
    for (int64_t b = 0; b < n / kQK_K; ++b) {
      decode_tq1_0_block(row + b * kTQ1BlockBytes, codes);
      for (int64_t j = 0; j < kQK_K; ++j) put(b * 256 + j, codes[j]);
    }
  } else if (w.type == DType::TQ2_0) {
    // Byte 32h + m of a block holds weights 128h + 32l + m at bits 2l: T2 word 8h + 2l + g
    // (weights 128h + 32l + 16g ..) is field l of bytes 32h + 16g .. + 15.
    const uint8_t* row = w.data + r * row_bytes(DType::TQ2_0, n);
    for (int64_t b = 0; b < n / kQK_K; ++b) {
      for (int64_t h = 0; h < 2; ++h) {
        for (int64_t l = 0; l < 4; ++l) {
          for (int64_t g = 0; g < 2; ++g) {
            out[b * 16 + 8 * h + 2 * l + g] = t2_word(row + b * 66 + 32 * h + 16 * g, 2 * l);
          }
        }
      }
    }
  } else {  // I2_S: byte m of run k holds weights 128k + 32g + m at bits 6 - 2g
    const uint8_t* row = w.data + r * (n / 4);
    for (int64_t k = 0; k < n / kI2SRun; ++k) {
      for (int64_t g = 0; g < 4; ++g) {
        for (int64_t q = 0; q < 2; ++q) {
          out[k * 8 + 2 * g + q] = t2_word(row + k * 32 + 16 * q, 6 - 2 * g);
        }
      }
    }
  }
}

// The one scale the CPU kernels use for every block (ternary_view in kernels.cpp), or 0 when
// the blocks of a TQ1_0 or TQ2_0 matrix have their own.
float uniform_d(const TernaryMatrix& w) {
  float d = w.uniform_scale;
  if (w.type == DType::I2_S && d == 0.0f) std::memcpy(&d, w.data + w.n_out * (w.n_in / 4), 4);
  return d;
}

FloatWeightType shader_type(DType t, const std::string& name) {
  switch (t) {
    case DType::F32:
    case DType::Q6_K:  // converted to f32
      return FloatWeightType::F32;
    case DType::F16:
      return FloatWeightType::F16;
    case DType::BF16:
      return FloatWeightType::BF16;
    case DType::Q8_0:
      return FloatWeightType::Q8_0;
    default:
      fail("vulkan: weight ", name, ": type ", dtype_name(t),
           " is not a float type the Vulkan backend reads (f32, f16, bf16, q8_0, q6_K)");
  }
}

// The first `keep` bytes of each of the nb blocks (of block_bytes) of every row of w, uploaded
// into t (rows of nb * keep bytes) a chunk of rows at a time.
void upload_block_heads(TiledTensor& t, const TernaryMatrix& w, int64_t nb, int64_t block_bytes,
                        int64_t keep) {
  const int64_t rb = row_bytes(w.type, w.n_in), out_row = nb * keep;
  const int64_t chunk = std::max<int64_t>(1, int64_t(kUploadChunk) / out_row);
  std::vector<uint8_t> bytes;
  for (int64_t r0 = 0; r0 < w.n_out; r0 += chunk) {
    const int64_t r1 = std::min(w.n_out, r0 + chunk);
    bytes.resize(size_t((r1 - r0) * out_row));
    uint8_t* out = bytes.data();
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t b = 0; b < nb; ++b, out += keep) {
        std::memcpy(out, w.data + r * rb + b * block_bytes, size_t(keep));
      }
    }
    t.upload(uint64_t(r0), uint64_t(r1 - r0), bytes.data());
  }
}

}  // namespace

WeightCache::WeightCache(Context& ctx, Recorder& rec) : ctx_(ctx), rec_(rec) {
  const char* e = std::getenv("TRIT_VK_TQ1_IN_PLACE");
  tq1_in_place_ = !(e && std::string(e) == "0");
  const char* t = std::getenv("TRIT_VK_TQ2_ON_DEVICE");
  tq2_on_device_ = !(t && std::string(t) == "0");
}

const TernaryWeight& WeightCache::ternary(const LinearWeight& lw) {
  auto it = ternary_.find(&lw);
  if (it != ternary_.end()) return *it->second;
  // The rows as stored on the host (padded there already when no packed type held them)
  const TernaryMatrix w = lw.m.storage();
  if (w.type != DType::TQ1_0 && w.type != DType::TQ2_0 && w.type != DType::I2_S) {
    fail("vulkan: linear ", lw.name, ": weight type ", dtype_name(w.type),
         " is not tq1_0, tq2_0 or i2_s");
  }
  auto tw = std::make_unique<TernaryWeight>();
  tw->d = uniform_d(w);
  // The shaders take rows of a multiple of 256 weights: an I2_S row of 3200 (runs of 128)
  // gets zero codes (code 1) up to 3328.
  tw->n_in = uint64_t(w.n_in + kQK_K - 1) / kQK_K * kQK_K;
  const uint64_t row_words = tw->n_in / 16;
  if (w.type == DType::TQ1_0 && tq1_in_place_) {
    // Kept as it is: each block's qs and qh bytes (52), in pieces of the rows a piece of its T2
    // codes would hold, so that t2() converts piece for piece.
    tw->tq1 = true;
    const int64_t nb = w.n_in / kQK_K;
    const uint64_t tq1_row = uint64_t(nb) * kTQ1Words * 4;
    TileOptions o;
    o.max_piece_bytes = std::max<uint64_t>(1, ctx_.binding_limit() / (row_words * 4)) * tq1_row;
    tw->codes = tiled(lw.name, uint64_t(w.n_out), tq1_row, o);
    tw->codes_piece = o.max_piece_bytes;
    upload_block_heads(tw->codes, w, nb, kTQ1BlockBytes, kTQ1Words * 4);
  } else if (w.type == DType::TQ2_0 && tq2_on_device_ && w.n_in % kQK_K == 0) {
    // Each block's 64 qs bytes as they are (its d left out), converted to T2 codes in place on
    // the device: the host's part is a copy (t2_row's bit shuffles bounded a streamed upload).
    tw->codes = tiled(lw.name, uint64_t(w.n_out), row_words * 4);
    upload_block_heads(tw->codes, w, w.n_in / kQK_K, 66, 64);
    tq2_codes(tw->codes);
  } else {
    tw->codes = tiled(lw.name, uint64_t(w.n_out), row_words * 4);
    const int64_t chunk = std::max<int64_t>(1, int64_t(kUploadChunk / (row_words * 4)));
    std::vector<uint32_t> words;
    for (int64_t r0 = 0; r0 < w.n_out; r0 += chunk) {
      const int64_t r1 = std::min(w.n_out, r0 + chunk);
      words.assign(size_t(r1 - r0) * row_words, 0x55555555u);
      for (int64_t r = r0; r < r1; ++r) t2_row(w, r, words.data() + size_t(r - r0) * row_words);
      tw->codes.upload(uint64_t(r0), uint64_t(r1 - r0), words.data());
    }
  }
  if (tw->d == 0.0f) {  // per-block scales, tiled exactly as the codes
    const int64_t nb = int64_t(tw->n_in) / kQK_K;
    TileOptions o;
    if (tw->codes.pieces() > 1) o.max_piece_bytes = tw->codes.rows_per_piece() * uint64_t(nb) * 4;
    tw->dblk = tiled(lw.name + " block scales", uint64_t(w.n_out), uint64_t(nb) * 4, o);
    tw->dblk_piece = o.max_piece_bytes;
    std::vector<float> d(size_t(w.n_out * nb), 0.0f);  // I2_S with a zero scale: zeros
    if (w.type != DType::I2_S) {
      const bool tq1 = w.type == DType::TQ1_0;
      const int64_t rb = row_bytes(w.type, w.n_in);
      const int64_t block = tq1 ? kTQ1BlockBytes : 66, d_at = tq1 ? kTQ1DOffset : 64;
      for (int64_t r = 0; r < w.n_out; ++r) {
        for (int64_t b = 0; b < w.n_in / kQK_K; ++b) {  // padded blocks: scale 0
          d[size_t(r * nb + b)] = fp16_to_f32(load_u16(w.data + r * rb + b * block + d_at));
        }
      }
    }
    tw->dblk.upload(0, uint64_t(w.n_out), d.data());
    if (tw->dblk.rows_per_piece() != tw->codes.rows_per_piece()) {
      fail("vulkan: linear ", lw.name, ": block scales tiled unlike the codes");
    }
  }
  return *ternary_.emplace(&lw, std::move(tw)).first->second;
}

void WeightCache::tq2_codes(const TiledTensor& codes) {
  const Pipeline& p = rec_.pipeline("tq2_codes", 1, sizeof(Tq2CodesPush), {256}, 0b0);
  // Its own submission, waited for: the cache holds codes only once they are converted.
  Sequence seq(ctx_, /*profiled=*/false);
  for (size_t i = 0; i < codes.pieces(); ++i) {
    const uint64_t blocks = codes.piece(i).rows() * codes.row_bytes() / 64;
    const GroupsXZ g = groups_x_z(ctx_, p, ceil_div(blocks, 256), 1);
    seq.dispatch(p, {codes.range(i)}, Tq2CodesPush{uint32_t(blocks)}, g.x, 1, g.z);
  }
  seq.submit_and_wait();
}

const TernaryWeight& WeightCache::t2(const LinearWeight& lw, uint32_t slot) {
  const TernaryWeight& tw = ternary(lw);
  if (!tw.tq1) return tw;
  const uint64_t n_out = tw.codes.rows(), row_bytes = tw.n_in / 4;
  std::unique_ptr<TernaryWeight>& view = t2_slots_[{n_out, tw.n_in, slot}];
  if (!view) {
    view = std::make_unique<TernaryWeight>();
    view->codes =
        make_tiled(ctx_, cat("T2 codes ", n_out, " x ", tw.n_in, " slot ", slot), n_out, row_bytes);
    if (view->codes.rows_per_piece() != tw.codes.rows_per_piece()) {
      fail("vulkan: linear ", lw.name, ": T2 codes tiled unlike the TQ1_0 rows");
    }
  }
  view->d = tw.d;
  view->n_in = tw.n_in;
  view->scales_of = &tw.dblk;
  const Pipeline& p = rec_.pipeline("tq1_codes", 2, sizeof(Tq1CodesPush), {256}, 0b01);
  for (size_t i = 0; i < tw.codes.pieces(); ++i) {
    const uint64_t words = tw.codes.piece(i).rows() * (row_bytes / 4);
    rec_.dispatch_rows(p, {tw.codes.range(i), view->codes.range(i)}, Tq1CodesPush{uint32_t(words)},
                       ceil_div(words, 256), 1);
  }
  return *view;
}

TiledTensor WeightCache::tiled(const std::string& name, uint64_t rows, uint64_t row_bytes,
                               const TileOptions& o) {
  auto it = spare_.find({rows, row_bytes, o.max_piece_bytes});
  if (it == spare_.end()) return make_tiled(ctx_, name, rows, row_bytes, o);
  TiledTensor t = std::move(it->second);
  spare_.erase(it);
  t.rename(name);
  return t;
}

void WeightCache::drop(const LinearWeight& lw) {
  if (lw.is_float()) {
    float_.erase(lw.f.data);
    return;
  }
  auto it = ternary_.find(&lw);
  if (it == ternary_.end()) return;
  TernaryWeight& tw = *it->second;
  spare_.emplace(std::tuple{tw.codes.rows(), tw.codes.row_bytes(), tw.codes_piece},
                 std::move(tw.codes));
  if (tw.dblk.rows() > 0) {
    spare_.emplace(std::tuple{tw.dblk.rows(), tw.dblk.row_bytes(), tw.dblk_piece},
                   std::move(tw.dblk));
  }
  ternary_.erase(it);
}

FloatRows WeightCache::float_matrix(const FloatMatrix& m, const std::string& name) {
  auto it = float_.find(m.data);
  if (it == float_.end()) it = float_.emplace(m.data, upload_float(ctx_, m, name)).first;
  return {&it->second->rows, it->second->type, m.n_in, m.n_out};
}

std::unique_ptr<WeightCache::Float> WeightCache::upload_float(Context& ctx, const FloatMatrix& m,
                                                              const std::string& name) {
  auto fw = std::make_unique<Float>();
  fw->type = shader_type(m.type, name);
  if ((fw->type == FloatWeightType::F16 || fw->type == FloatWeightType::BF16) && m.n_in % 2 != 0) {
    fail("vulkan: weight ", name, ": ", dtype_name(m.type), " rows of an odd length ", m.n_in);
  }
  const uint64_t src_row = uint64_t(row_bytes(m.type, m.n_in));
  if (m.type == DType::Q6_K) {
    const uint64_t dst_row = uint64_t(m.n_in) * 4;
    fw->rows = make_tiled(ctx, name, uint64_t(m.n_out), dst_row);
    const int64_t chunk = std::max<int64_t>(1, int64_t(kUploadChunk / dst_row));
    std::vector<float> f;
    for (int64_t r0 = 0; r0 < m.n_out; r0 += chunk) {
      const int64_t r1 = std::min(m.n_out, r0 + chunk);
      f.resize(size_t(r1 - r0) * size_t(m.n_in));
      for (int64_t r = r0; r < r1; ++r) {
        dequantize_row(DType::Q6_K, m.data + uint64_t(r) * src_row, m.n_in,
                       f.data() + size_t(r - r0) * size_t(m.n_in));
      }
      fw->rows.upload(uint64_t(r0), uint64_t(r1 - r0), f.data());
      if (m.pages) m.pages->release(m.data + uint64_t(r0) * src_row, uint64_t(r1 - r0) * src_row);
    }
  } else {
    fw->rows = make_tiled(ctx, name, uint64_t(m.n_out), src_row);
    const int64_t chunk = std::max<int64_t>(1, int64_t(kUploadChunk / src_row));
    for (int64_t r0 = 0; r0 < m.n_out; r0 += chunk) {
      const int64_t r1 = std::min(m.n_out, r0 + chunk);
      const uint8_t* rows = m.data + uint64_t(r0) * src_row;
      fw->rows.upload(uint64_t(r0), uint64_t(r1 - r0), rows);
      if (m.pages) m.pages->release(rows, uint64_t(r1 - r0) * src_row);  // copied: not read again
    }
  }
  return fw;
}

const TiledTensor& WeightCache::norm(const float* g, int64_t n) {
  auto it = norms_.find(g);
  if (it != norms_.end()) {
    if (it->second.row_bytes() != uint64_t(n) * 4) {
      fail("vulkan: rms_norm: the weight at one address used with ", it->second.row_bytes() / 4,
           " and ", n, " values");
    }
    return it->second;
  }
  TiledTensor t = make_tiled(ctx_, "norm weight", 1, uint64_t(n) * 4);
  t.upload(0, 1, g);
  return norms_.emplace(g, std::move(t)).first->second;
}

const TiledTensor& WeightCache::rope_table(int64_t positions, int64_t rope_dim, float base) {
  if (rope_.rows() >= uint64_t(positions) && rope_dim_ == rope_dim && rope_base_ == base) {
    return rope_;
  }
  uint64_t rows = kMinRopeRows;
  while (rows < uint64_t(positions)) rows *= 2;
  // Row p: cos of float(p) * inv_freq[i] for i < rope_dim / 2, then the sines (rope_forward).
  const int64_t half = rope_dim / 2;
  std::vector<float> inv_freq(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) {
    inv_freq[size_t(i)] = 1.0f / std::pow(base, float(2 * i) / float(rope_dim));
  }
  std::vector<float> tab(rows * uint64_t(rope_dim));
  for (uint64_t p = 0; p < rows; ++p) {
    float* row = tab.data() + p * uint64_t(rope_dim);
    for (int64_t i = 0; i < half; ++i) {
      const float angle = float(int32_t(p)) * inv_freq[size_t(i)];
      row[i] = std::cos(angle);
      row[half + i] = std::sin(angle);
    }
  }
  if (rope_.rows() != 0) rec_.retire(std::move(rope_));  // queued work may read it
  rope_ = make_tiled(ctx_, "rope table", rows, uint64_t(rope_dim) * 4);
  rope_.upload(0, rows, tab.data());
  rope_dim_ = rope_dim;
  rope_base_ = base;
  return rope_;
}

}  // namespace trit::engine::vk
