#include "model/model.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "core/quant.h"
#include "core/shape.h"
#include "io/gguf.h"
#include "model/block_stager.h"
#include "model/embedded_adapter.h"
#include "model/llama_layout.h"
#include "model/memory_estimate.h"
#include "tokenizer/tokenizer.h"

namespace trit::engine {
namespace {

void check_shape(const GgufFile& f, const GgufTensor& t, std::vector<int64_t> expected) {
  if (t.ne != expected) {
    fail(f.path(), ": tensor ", t.name, ": shape ", shape_text(t.ne), ", expected ",
         shape_text(expected));
  }
}

}  // namespace

Model::~Model() = default;

const std::string& Model::path() const {
  return file_->path();
}

std::unique_ptr<Model> Model::load(const std::string& path, const Warn& warn,
                                   std::optional<Activation> act_override) {
  std::unique_ptr<Model> m(new Model());
  m->file_ = GgufFile::open(path);
  const GgufFile& f = *m->file_;
  ActivationSource& act_source = m->act_source_;
  m->hp_ = HParams::from_gguf(f, act_override, &act_source);
  // llama files state nothing and need no word; a bitnet file without the key is a guess.
  if (act_source.assumed && m->hp_.family() == Family::BitNet && warn) {
    warn(cat(path, ": activation ", activation_name(m->hp_.act), " (", act_source.why,
             "; --activation overrides)"));
  }
  m->tokenizer_ = Tokenizer::from_gguf(f);
  if (m->tokenizer_ && m->tokenizer_->vocab_size() > m->hp_.n_vocab) {
    fail(path, ": tokenizer.ggml.tokens has ", m->tokenizer_->vocab_size(),
         " tokens, more than the model's vocab_size ", m->hp_.n_vocab);
  }
  if (f.has(kLinearWeightsKey)) {
    const std::string& meaning = f.get_string(kLinearWeightsKey);
    if (meaning != kLinearWeightsMerged) {
      fail(path, ": metadata key '", kLinearWeightsKey, "' is '", meaning, "', expected '",
           kLinearWeightsMerged, "' (without the key, float linear weights are ternarised)");
    }
    m->merged_linears_ = true;
  }
  const HParams& hp = m->hp_;
  m->w_.token_embd = m->load_float_matrix("token_embd.weight", hp.n_embd, hp.n_vocab);
  m->w_.output = hp.tied_head ? m->w_.token_embd
                              : m->load_float_matrix("output.weight", hp.n_embd, hp.n_vocab);
  m->w_.output_norm = m->load_f32_vector("output_norm.weight", hp.n_embd);
  m->w_.blocks.resize(size_t(hp.n_layer));
  for (int64_t l = 0; l < hp.n_layer; ++l) {
    BlockWeights& b = m->w_.blocks[size_t(l)];
    b.attn_norm = m->load_f32_vector(block_tensor_name(l, "attn_norm"), hp.n_embd);
    b.ffn_norm = m->load_f32_vector(block_tensor_name(l, "ffn_norm"), hp.n_embd);
    if (hp.sub_norms()) {
      b.attn_sub_norm = m->load_f32_vector(block_tensor_name(l, "attn_sub_norm"), hp.n_embd);
      b.ffn_sub_norm = m->load_f32_vector(block_tensor_name(l, "ffn_sub_norm"), hp.n_ff);
    }
    b.q = m->load_linear(l, "attn_q");
    b.k = m->load_linear(l, "attn_k");
    b.v = m->load_linear(l, "attn_v");
    b.o = m->load_linear(l, "attn_output");
    b.gate = m->load_linear(l, "ffn_gate");
    b.up = m->load_linear(l, "ffn_up");
    b.down = m->load_linear(l, "ffn_down");
  }
  if (std::optional<EmbeddedAdapter> e = read_embedded_adapter(f, hp)) {
    m->embedded_ = std::make_unique<LoraAdapter>(std::move(e->adapter));
    m->embedded_scale_ = e->scale;
  }
  m->find_spans();
  return m;
}

const float* Model::load_f32_vector(const std::string& name, int64_t n) {
  const GgufFile& f = *file_;
  const GgufTensor& t = f.tensor(name);
  if (t.n_elements() != n || t.ne.empty() || t.ne[0] != n) {
    fail(f.path(), ": tensor ", name, ": shape ", shape_text(t.ne), ", expected [", n, "]");
  }
  if (dtype_traits(t.type).ternary) {
    fail(f.path(), ": tensor ", name, ": type ", dtype_name(t.type), " for a norm weight");
  }
  // Norm weights are small and sit between the big tensors: copied, so that reading them does
  // not map the file's page-cache folios around them (mostly other tensors' bytes, which
  // would then count in the resident set).
  std::vector<uint8_t> buf(size_t(n) * sizeof(float));
  dequantize(t.type, t.data, n, reinterpret_cast<float*>(buf.data()));
  f.release(t);
  owned_.push_back(std::move(buf));
  return reinterpret_cast<const float*>(owned_.back().data());
}

FloatMatrix Model::load_float_matrix(const std::string& name, int64_t n_in, int64_t n_out) {
  const GgufFile& f = *file_;
  const GgufTensor& t = f.tensor(name);
  check_shape(f, t, {n_in, n_out});
  switch (t.type) {
    case DType::F32:
    case DType::F16:
    case DType::BF16:
    case DType::Q8_0:
    case DType::Q6_K:
      break;
    default:
      fail(f.path(), ": tensor ", name, ": type ", dtype_name(t.type),
           " is not supported for embeddings or the head (f32, f16, bf16, q8_0, q6_K)");
  }
  return FloatMatrix{t.type, t.data, n_in, n_out, file_.get()};
}

LinearWeight Model::load_linear(int64_t layer, const std::string& what) {
  const GgufFile& f = *file_;
  const std::string name = block_tensor_name(layer, what);
  const GgufTensor& t = f.tensor(name);
  auto [n_in, n_out] = block_linear_shape(hp_, what);
  check_shape(f, t, {n_in, n_out});
  LinearWeight lw;
  lw.name = name;
  lw.m.n_in = n_in;
  lw.m.n_out = n_out;
  const int64_t n = n_in * n_out;
  switch (t.type) {
    case DType::TQ1_0:  // every backend reads the file's bytes as they are
    case DType::TQ2_0:
    case DType::I2_S:
      lw.m.type = t.type;
      lw.m.data = t.data;
      break;
    case DType::F32:
    case DType::F16:
    case DType::BF16: {
      if (merged_linears_) {  // used as they are (model.h)
        // m keeps the shape and the float type, so ternary kernels refuse it rather than read
        // a null pointer.
        lw.m.type = t.type;
        lw.f = FloatMatrix{t.type, t.data, n_in, n_out};
        break;
      }
      // float weights: ternarised, keeping the values of weights that are ternary already
      // (core/quant.h ternarize), else by absmean as transformers does online
      std::vector<float> w(static_cast<size_t>(n));
      dequantize(t.type, t.data, n, w.data());
      // A llama file's float layers are ternary models' only when ternary already: anything
      // else is an ordinary Llama model, which absmean would silently ruin.
      if (hp_.family() == Family::Llama && !ternary_magnitude(w.data(), n)) {
        fail(f.path(), ": tensor ", name, ": ", dtype_name(t.type),
             " weights that are not ternary (values -s, 0, +s) in a llama file: not a ternary "
             "model (trit runs BitNet b1.58 and ternary Llama-architecture models)");
      }
      std::vector<int8_t> trits(static_cast<size_t>(n));
      const float scale = ternarize(w.data(), n, trits.data());
      w = {};
      f.release(t);
      // A width that is not a multiple of TQ2_0's block (1bitLLM's 3B: 3200, 8640) is stored
      // padded with zero codes (TernaryMatrix::row_in): the same products, exactly.
      const int64_t row_in = (n_in + kQK_K - 1) / kQK_K * kQK_K;
      if (row_in != n_in) {
        std::vector<int8_t> padded(static_cast<size_t>(row_in * n_out), 0);
        for (int64_t r = 0; r < n_out; ++r) {
          std::memcpy(padded.data() + r * row_in, trits.data() + r * n_in, size_t(n_in));
        }
        trits.swap(padded);
        lw.m.row_in = row_in;
      }
      owned_.push_back(pack_ternary(DType::TQ2_0, trits.data(), row_in * n_out, scale));
      lw.m.type = DType::TQ2_0;
      lw.m.data = owned_.back().data();
      break;
    }
    default:
      fail(f.path(), ": tensor ", name, ": type ", dtype_name(t.type),
           " is not supported for a linear layer (tq1_0, tq2_0, i2_s, or float to ternarise)");
  }
  if (rows_permuted_in_file(hp_, what)) {  // llama.cpp's row order: back to Hugging Face's
    const DType type = lw.is_float() ? lw.f.type : lw.m.type;
    const uint8_t* src = lw.is_float() ? lw.f.data : lw.m.data;
    const int64_t width = lw.is_float() ? n_in : lw.m.stored_in();
    std::vector<uint8_t> rows =
        reorder_rows(src, *tensor_bytes(type, width, width * n_out), n_out,
                     size_t(row_bytes(type, width)), hp_.head_dim(), RowOrder::FileToHf);
    if (src == t.data) f.release(t);
    owned_.push_back(std::move(rows));
    (lw.is_float() ? lw.f.data : lw.m.data) = owned_.back().data();
  }
  if (!lw.is_float()) {
    lw.m.uniform_scale = ternary_uniform_scale(lw.m.type, lw.m.data, lw.m.stored_in(), n_out);
    // The scan read every page: out of the resident set until a pass uses them, so that
    // loading does not hold the whole model (a memory budget may be smaller).
    if (lw.m.data == t.data) f.release(t);
  }
  const std::string scale_name = cat("blk.", layer, ".", what, ".scale");
  if (const GgufTensor* s = f.find_tensor(scale_name)) {
    if (s->n_elements() != 1) {
      fail(f.path(), ": tensor ", scale_name, ": ", s->n_elements(), " elements, expected 1");
    }
    float v = 0;
    dequantize(s->type, s->data, 1, &v);
    lw.out_scale = v;
  }
  return lw;
}

// ---- streaming ----

void Model::find_spans() {
  const GgufFile& f = *file_;
  // The smallest range of the mapping holding every byte a block reads in place (its linear
  // layers; norms are copied at load). GGUF files keep a block's tensors together.
  auto span_of = [&](std::initializer_list<std::pair<const uint8_t*, uint64_t>> parts) {
    const uint8_t* lo = nullptr;
    const uint8_t* hi = nullptr;
    for (const auto& [p, n] : parts) {
      if (!p || n == 0 || !f.maps(p)) continue;
      if (!lo || p < lo) lo = p;
      if (!hi || p + n > hi) hi = p + n;
    }
    return lo ? Span{lo, uint64_t(hi - lo)} : Span{};
  };
  auto linear = [](const LinearWeight& lw) {
    if (lw.is_float()) {
      return std::pair{lw.f.data, *tensor_bytes(lw.f.type, lw.f.n_in, lw.f.n_in * lw.f.n_out)};
    }
    const int64_t w = lw.m.stored_in();
    return std::pair{lw.m.data, *tensor_bytes(lw.m.type, w, w * lw.m.n_out)};
  };
  spans_.clear();
  for (const BlockWeights& b : w_.blocks) {
    spans_.push_back(span_of({linear(b.q), linear(b.k), linear(b.v), linear(b.o), linear(b.gate),
                              linear(b.up), linear(b.down)}));
  }
  const FloatMatrix& h = w_.output;
  spans_.push_back(span_of({{h.data, *tensor_bytes(h.type, h.n_in, h.n_in * h.n_out)}}));
  dropped_ = std::make_unique<std::atomic<bool>[]>(spans_.size());
  stager_ = std::make_unique<BlockStager>(f, w_.blocks, w_.output);
}

namespace {

std::string mib_text(uint64_t bytes) {
  return cat((bytes + (1 << 20) - 1) >> 20, " MiB");
}
}  // namespace

uint64_t Model::owned_bytes() const {
  uint64_t owned = 0;
  for (const auto& o : owned_) owned += o.size();
  return owned;
}

uint64_t Model::piece_run_bytes(int64_t n_ctx, int64_t n_batch, bool kv_f16) const {
  // Every block and piece of the head goes through the stager's two buffers (resident in
  // whole 2 MiB pages), beside the session's cache and tensors, the vocabulary's tables and the
  // process.
  constexpr uint64_t kPage = 2ull << 20;
  const uint64_t buffers = 2 * ((stager_->buffer_bytes() + kPage - 1) / kPage * kPage);
  const uint64_t parts =
      run_memory(hp_, owned_bytes() + buffers, n_ctx, n_batch, kv_f16 ? KvType::F16 : KvType::F32)
          .total();
  // What the parts leave out (threads' allocator arenas and scratch, pages mapped around the
  // rows read): decoding 1B to 13B at one position's budget peaked 1.4-12.6 MiB above the
  // parts on the 2-core VM of docs/PERF.md.
  return parts + parts * 15 / 100 + (4ull << 20);
}

void Model::check_piece_budget(int64_t positions, int64_t n_batch, bool kv_f16,
                               const std::string& what, const std::string& hint) const {
  if (mem_budget_ == 0 || mem_budget_ >= min_stream_bytes()) return;
  const uint64_t need = piece_run_bytes(positions, n_batch, kv_f16);
  if (need > mem_budget_) {
    fail(path(), ": a memory budget of ", mib_text(mem_budget_), " cannot hold ", what,
         ": it needs ", mib_text(need), " (", hint, ")");
  }
}

void Model::check_head_whole_budget(const std::string& what) const {
  if (mem_budget_ == 0 || mem_budget_ >= min_stream_bytes()) return;
  fail(path(), ": ", what, " reads the head whole, which a memory budget of ",
       mib_text(mem_budget_), " cannot hold: it needs ", mib_text(min_stream_bytes()));
}

uint64_t Model::min_stream_bytes(bool head_in_pieces) const {
  if (head_in_pieces && stager_->head_pieces() > 0) {
    // The smallest run: one position; never more than with the head whole.
    return std::min(piece_run_bytes(1, 1, false), min_stream_bytes(false));
  }
  uint64_t pair = 0;
  const size_t n = spans_.size();
  for (size_t i = 0; i < n; ++i) pair = std::max(pair, spans_[i].n + spans_[(i + 1) % n].n);
  return kProcessBytes + owned_bytes() + pair;
}

uint64_t Model::resident_run_bytes() const {
  uint64_t mapped = 0;
  for (const Span& sp : spans_) mapped += sp.n;
  return kProcessBytes + owned_bytes() + mapped;
}

void Model::set_mem_budget(uint64_t bytes, bool head_in_pieces) {
  const uint64_t least = min_stream_bytes(head_in_pieces);
  if (bytes > 0 && bytes < least) {
    const bool pieces = head_in_pieces && least < min_stream_bytes();
    fail(path(), ": a memory budget of ", mib_text(bytes),
         " cannot run this model: the smallest that works is ", mib_text(least),
         pieces
             ? " (the two buffers its blocks and pieces of the head are read into, one "
               "position's cache, the vocabulary and the process; a longer context needs more)"
             : " (two neighbouring blocks of weights, those converted at load, and the process)");
  }
  mem_budget_ = bytes;
  streaming_ = bytes > 0 && bytes < resident_run_bytes();
}

uint64_t Model::block_bytes(int64_t l) const {
  return l >= 0 && l < int64_t(spans_.size()) ? spans_[size_t(l)].n : 0;
}

void Model::read_ahead(int64_t l, WeightUse use) const {
  if (!(streaming_ || use.pass_streams) || l < 0) return;
  if (stages(use) && (l < hp_.n_layer || head_pieces(use) > 0)) {
    stager_->ahead(l);  // a block, or a piece of the head (past the last: nothing to read)
    return;
  }
  if (l >= int64_t(spans_.size())) return;
  if (stages(use)) stager_->ahead(-1);  // the head read whole: idle buffers give memory back
  // Pages fault in as the threads read them. Mapping a block in one call before it computes
  // (MADV_POPULATE_READ) was slower: 1B decoding at 15.1 against 17.4 tokens/s on two cores
  // (and slower still from a thread of its own).
  file_->prefetch(spans_[size_t(l)].p, spans_[size_t(l)].n);
}

Model::BlockRef Model::block(int64_t l, WeightUse use) const {
  const BlockWeights& mapped = w_.blocks.at(size_t(l));
  if (!stages(use)) return BlockRef(mapped, nullptr, l);
  const BlockStager::Staged* staged = stager_->take(l);
  // Both buffers held by other passes: this one reads the mapping (released by block_out).
  return staged ? BlockRef(staged->w, stager_.get(), l) : BlockRef(mapped, nullptr, l);
}

Model::BlockRef::~BlockRef() {
  if (held_) held_->give(l_);
}

int64_t Model::head_pieces(WeightUse use) const {
  return stages(use) && use.host && use.head_pieces ? stager_->head_pieces() : 0;
}

Model::HeadPiece Model::head_piece(int64_t i, WeightUse use) const {
  const int64_t pieces = head_pieces(use);
  if (i < 0 || i >= pieces) fail("head piece ", i, " of ", pieces);
  const int64_t unit = hp_.n_layer + i;
  if (const BlockStager::Staged* s = stager_->take(unit)) {
    return HeadPiece(s->head, s->head_row0, stager_.get(), unit);
  }
  // Both buffers held by other passes: the piece's rows in the mapping (released by block_out).
  FloatMatrix m = w_.output;
  const int64_t rows = stager_->head_piece_rows(), row0 = i * rows;
  m.data += uint64_t(row0) * uint64_t(row_bytes(m.type, m.n_in));
  m.n_out = std::min(rows, m.n_out - row0);
  return HeadPiece(m, row0, nullptr, unit);
}

Model::HeadPiece::~HeadPiece() {
  if (held_) held_->give(unit_);
}

void Model::block_out(int64_t l, WeightUse use) const {
  if (l < 0 || l >= int64_t(spans_.size())) return;
  // A device uploads a block's weights while its first pass records the block.
  if (streaming_ || use.pass_streams || (!use.host && !dropped_[size_t(l)].exchange(true))) {
    file_->release(spans_[size_t(l)].p, spans_[size_t(l)].n);
  }
}

}  // namespace trit::engine
