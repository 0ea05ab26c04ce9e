#include "tools/create.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define TRIT_CREATE_F16C 1
#endif

#include "core/cpu_features.h"
#include "core/error.h"
#include "core/half.h"
#include "core/quant.h"
#include "io/gguf.h"

namespace trit::engine {
namespace {

// ---- random numbers ---------------------------------------------------------------------------

uint64_t splitmix_next(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// xoshiro256**: fast, good statistical quality; one independent stream per (tensor, chunk).
class Rng {
 public:
  Rng(uint64_t seed, uint64_t tensor, uint64_t chunk) {
    uint64_t sm = seed;
    uint64_t a = splitmix_next(sm);
    sm = a ^ (tensor * 0xd1b54a32d192ed03ull);
    uint64_t b = splitmix_next(sm);
    sm = b ^ (chunk * 0x8cb92ba72f3d8dd7ull);
    for (uint64_t& s : s_) s = splitmix_next(sm);
  }
  uint64_t next() {
    const uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }
  // Approximately normal(0, 1): the sum of four 16-bit uniforms (Irwin-Hall), rescaled.
  float normal() {
    const uint64_t r = next();
    const uint32_t sum = uint32_t(r & 0xffff) + uint32_t((r >> 16) & 0xffff) +
                         uint32_t((r >> 32) & 0xffff) + uint32_t(r >> 48);
    constexpr float kScale = 1.7320508f / 65536.0f;  // sqrt(12 / 4) per unit
    return (float(sum) - 131070.0f) * kScale;
  }

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4];
};

// ---- tables of valid packed bytes -------------------------------------------------------------

struct ByteTables {
  uint8_t two_bit[81];     // TQ2_0 / I2_S bytes: four 2-bit codes, each in {0, 1, 2}
  uint8_t five_trit[243];  // TQ1_0 qs bytes: ceil(v * 256 / 243), v = 0..242
  uint8_t four_trit[81];   // TQ1_0 qh bytes: four trits then a zero trit, v = 3 * u
  ByteTables() {
    int k = 0;
    for (int b = 0; b < 256; ++b) {
      bool ok = true;
      for (int l = 0; l < 4; ++l) ok = ok && ((b >> (2 * l)) & 3) != 3;
      if (ok) two_bit[k++] = uint8_t(b);
    }
    for (int v = 0; v < 243; ++v) five_trit[v] = uint8_t((v * 256 + 242) / 243);
    for (int u = 0; u < 81; ++u) four_trit[u] = uint8_t((3 * u * 256 + 242) / 243);
  }
};

const ByteTables& tables() {
  static const ByteTables t;
  return t;
}

// Fills n bytes uniformly from a table of k entries (two 32-bit draws per 64-bit number).
void fill_from_table(Rng& rng, const uint8_t* table, uint32_t k, uint8_t* out, int64_t n) {
  int64_t i = 0;
  for (; i + 1 < n; i += 2) {
    const uint64_t r = rng.next();
    out[i] = table[(uint64_t(uint32_t(r)) * k) >> 32];
    out[i + 1] = table[((r >> 32) * k) >> 32];
  }
  if (i < n) out[i] = table[(uint64_t(uint32_t(rng.next())) * k) >> 32];
}

void put_u16(uint8_t* p, uint16_t v) {
  p[0] = uint8_t(v & 0xff);
  p[1] = uint8_t(v >> 8);
}

// Blocks [0, n_blocks) of a TQ1_0 or TQ2_0 chunk with block scale d (fp16 bits).
void fill_tq_blocks(Rng& rng, DType type, uint16_t d, int64_t n_blocks, uint8_t* out) {
  const ByteTables& t = tables();
  if (type == DType::TQ2_0) {
    for (int64_t b = 0; b < n_blocks; ++b, out += 66) {
      fill_from_table(rng, t.two_bit, 81, out, 64);
      put_u16(out + 64, d);
    }
  } else {
    for (int64_t b = 0; b < n_blocks; ++b, out += 54) {
      fill_from_table(rng, t.five_trit, 243, out, 48);
      fill_from_table(rng, t.four_trit, 81, out + 48, 4);
      put_u16(out + 52, d);
    }
  }
}

// ---- embeddings ---------------------------------------------------------------------------

#ifdef TRIT_CREATE_F16C
// f32 -> f16 with F16C, round to nearest even: the same bits as f32_to_fp16, several times
// faster (the embedding of a 2B model is 328M values).
__attribute__((target("f16c,avx"))) void f32_to_f16_f16c(const float* x, int64_t n, uint8_t* out) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 2 * i), h);
  }
  for (; i < n; ++i) put_u16(out + 2 * i, f32_to_fp16(x[i]));
}
#endif

std::vector<uint8_t> encode_floats(DType type, const std::vector<float>& x) {
#ifdef TRIT_CREATE_F16C
  static const bool f16c = cpu_has_f16c() && __builtin_cpu_supports("avx");
  if (type == DType::F16 && f16c) {
    std::vector<uint8_t> out(x.size() * 2);
    f32_to_f16_f16c(x.data(), int64_t(x.size()), out.data());
    return out;
  }
#endif
  return quantize(type, x.data(), int64_t(x.size()));
}

// ---- streaming ------------------------------------------------------------------------------

// Generates a tensor's bytes in n_chunks chunks (gen(c, buf) fills chunk c) and appends them in
// order; up to `threads` chunks are generated at once. The bytes depend only on the chunking,
// never on the thread count.
void stream_chunks(GgufWriter& w, int64_t n_chunks, int threads,
                   const std::function<void(int64_t, std::vector<uint8_t>&)>& gen) {
  std::vector<std::vector<uint8_t>> bufs(size_t(std::max(threads, 1)));
  for (int64_t c0 = 0; c0 < n_chunks; c0 += int64_t(bufs.size())) {
    const int64_t n = std::min<int64_t>(int64_t(bufs.size()), n_chunks - c0);
    if (n == 1) {
      gen(c0, bufs[0]);
    } else {
      std::vector<std::thread> workers;
      for (int64_t i = 1; i < n; ++i)
        workers.emplace_back([&, i] { gen(c0 + i, bufs[size_t(i)]); });
      gen(c0, bufs[0]);
      for (auto& th : workers) th.join();
    }
    for (int64_t i = 0; i < n; ++i) w.append(bufs[size_t(i)].data(), bufs[size_t(i)].size());
  }
}

constexpr int64_t kTernaryChunkBlocks = 8192;  // 2M weights per chunk
constexpr int64_t kEmbdChunkRows = 256;

void check_fits(DType type, int64_t n, const char* what, const char* role) {
  const int64_t block = dtype_traits(type).block_elems;
  if (n % block != 0) {
    fail("create: ", what, " is ", n, ", which ", role, " type ", dtype_name(type),
         " needs to be a multiple of ", block);
  }
}

// GPT-2's bytes_to_unicode: printable bytes map to themselves, the others to 256 + k in order.
std::vector<std::string> byte_level_chars() {
  auto keep = [](int b) { return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174; };
  std::vector<std::string> out(256);
  int k = 0;
  for (int b = 0; b < 256; ++b) {
    const uint32_t cp = keep(b) ? uint32_t(b) : uint32_t(256 + k++);
    std::string s;
    if (cp < 0x80) {
      s += char(cp);
    } else {  // all code points here are below 0x800
      s += char(0xc0 | (cp >> 6));
      s += char(0x80 | (cp & 0x3f));
    }
    out[size_t(b)] = s;
  }
  return out;
}

}  // namespace

uint32_t file_type_for(DType t) {
  switch (t) {
    case DType::F32:
      return 0;
    case DType::F16:
      return 1;
    case DType::Q8_0:
      return 7;
    case DType::Q6_K:
      return 18;
    case DType::BF16:
      return 32;
    case DType::TQ1_0:
      return 36;
    case DType::TQ2_0:
      return 37;
    case DType::I2_S:
      return 40;
  }
  return 0;
}

void write_byte_tokenizer(GgufWriter& out, int64_t n_vocab) {
  if (n_vocab < 259)
    fail("create: a byte-level tokenizer needs at least 259 tokens, not ", n_vocab);
  std::vector<std::string> tokens = byte_level_chars();
  std::vector<int32_t> types(256, 1);
  tokens.reserve(size_t(n_vocab));
  types.reserve(size_t(n_vocab));
  for (const char* s : {"<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"}) {
    tokens.emplace_back(s);
    types.push_back(3);
  }
  // The rest are word-like normal tokens (a space then letters: " a", " b", ..., " aa", ...)
  // so that text generated by a random model shows up when printed. No merges make them,
  // so encoding never produces them.
  for (int64_t i = 0; int64_t(tokens.size()) < n_vocab; ++i) {
    std::string word;
    for (int64_t k = i;; k = k / 26 - 1) {
      word.insert(word.begin(), char('a' + k % 26));
      if (k < 26) break;
    }
    tokens.push_back("\xc4\xa0" + word);  // U+0120 is the byte-level space
    types.push_back(1);
  }
  out.set_string("tokenizer.ggml.model", "gpt2");
  out.set_string("tokenizer.ggml.pre", "default");
  out.set("tokenizer.ggml.tokens", GgufValue::string_array(std::move(tokens)));
  out.set("tokenizer.ggml.token_type", GgufValue::i32_array(types));
  out.set("tokenizer.ggml.merges", GgufValue::string_array({}));
  out.set_u32("tokenizer.ggml.bos_token_id", 256);
  out.set_u32("tokenizer.ggml.eos_token_id", 257);
  out.set_u32("tokenizer.ggml.eot_token_id", 258);
  out.set_bool("tokenizer.ggml.add_bos_token", true);
}

CreateResult create_random_model(const CreateOptions& opt, const std::string& path) {
  const auto t0 = std::chrono::steady_clock::now();
  const HParams& hp = opt.hp;
  hp.validate("create");
  if (!dtype_traits(opt.type).ternary) {
    fail("create: --type must be tq1_0, tq2_0 or i2_s, not ", dtype_name(opt.type));
  }
  if (dtype_traits(opt.embd_type).ternary) {
    fail("create: --embd-type must be f32, f16, bf16, q8_0 or q6_K, not ",
         dtype_name(opt.embd_type));
  }
  // Linear layers whose width the type cannot hold (1bitLLM's 3B: 3200, 8640) are written as
  // f16 ternary values, as llama.cpp's converter writes them (the loader packs them padded).
  const int64_t tq_block = opt.type == DType::I2_S ? kI2SRun : kQK_K;
  auto linear_type = [&](int64_t n_in) { return n_in % tq_block == 0 ? opt.type : DType::F16; };
  check_fits(opt.embd_type, hp.n_embd, "n_embd", "the embedding");

  GgufWriter w;
  w.set_alignment(32);
  hp.write_gguf(w);
  w.set_string("general.name", opt.name);
  w.set_u32("general.file_type", file_type_for(opt.type));
  w.set("general.quantization_version", GgufValue::u32(2));
  if (hp.n_vocab >= 259) write_byte_tokenizer(w, hp.n_vocab);

  // Tensors in file order; kind decides how the data is generated.
  enum class Kind { Embd, Norm, Linear };
  struct Spec {
    Kind kind;
    int64_t n_in, n_out;
  };
  std::vector<Spec> specs;
  auto add = [&](std::string name, Kind kind, DType type, int64_t n_in, int64_t n_out) {
    std::vector<int64_t> ne =
        n_out == 1 ? std::vector<int64_t>{n_in} : std::vector<int64_t>{n_in, n_out};
    w.add_tensor(std::move(name), type, std::move(ne));
    specs.push_back({kind, n_in, n_out});
  };
  add("token_embd.weight", Kind::Embd, opt.embd_type, hp.n_embd, hp.n_vocab);
  for (int64_t l = 0; l < hp.n_layer; ++l) {
    auto linear = [&](const char* what) {
      const auto [n_in, n_out] = block_linear_shape(hp, what);
      add(block_tensor_name(l, what), Kind::Linear, linear_type(n_in), n_in, n_out);
    };
    add(block_tensor_name(l, "attn_norm"), Kind::Norm, DType::F32, hp.n_embd, 1);
    linear("attn_q");
    linear("attn_k");
    linear("attn_v");
    if (hp.sub_norms())
      add(block_tensor_name(l, "attn_sub_norm"), Kind::Norm, DType::F32, hp.n_embd, 1);
    linear("attn_output");
    add(block_tensor_name(l, "ffn_norm"), Kind::Norm, DType::F32, hp.n_embd, 1);
    linear("ffn_gate");
    linear("ffn_up");
    if (hp.sub_norms())
      add(block_tensor_name(l, "ffn_sub_norm"), Kind::Norm, DType::F32, hp.n_ff, 1);
    linear("ffn_down");
  }
  add("output_norm.weight", Kind::Norm, DType::F32, hp.n_embd, 1);
  if (!hp.tied_head) add("output.weight", Kind::Embd, opt.embd_type, hp.n_embd, hp.n_vocab);

  const int threads = int(std::clamp(std::thread::hardware_concurrency(), 1u, 8u));
  w.begin(path);
  for (size_t ti = 0; ti < specs.size(); ++ti) {
    const Spec s = specs[ti];
    const uint64_t seed = opt.seed;
    if (s.kind == Kind::Norm) {
      Rng rng(seed, ti, 0);
      std::vector<float> v(size_t(s.n_in));
      for (float& x : v) x = 1.0f + 0.02f * rng.normal();
      w.append(v.data(), v.size() * sizeof(float));
    } else if (s.kind == Kind::Embd) {
      const int64_t n_chunks = (s.n_out + kEmbdChunkRows - 1) / kEmbdChunkRows;
      const DType type = opt.embd_type;
      stream_chunks(w, n_chunks, threads, [&](int64_t c, std::vector<uint8_t>& buf) {
        const int64_t rows = std::min(kEmbdChunkRows, s.n_out - c * kEmbdChunkRows);
        std::vector<float> x(size_t(rows * s.n_in));
        Rng rng(seed, ti, uint64_t(c));
        for (float& v : x) v = 0.5f * rng.normal();
        buf = encode_floats(type, x);
      });
    } else {
      const uint16_t d16 = f32_to_fp16(1.0f / std::sqrt(float(s.n_in)));
      const int64_t n = s.n_in * s.n_out;
      const DType type = linear_type(s.n_in);
      if (type == DType::F16) {  // trits times the scale, row by row
        const int64_t rows_per_chunk = std::max<int64_t>(1, kTernaryChunkBlocks * kQK_K / s.n_in);
        const int64_t n_chunks = (s.n_out + rows_per_chunk - 1) / rows_per_chunk;
        stream_chunks(w, n_chunks, threads, [&](int64_t c, std::vector<uint8_t>& buf) {
          const int64_t m = std::min(rows_per_chunk, s.n_out - c * rows_per_chunk) * s.n_in;
          buf.resize(size_t(m) * 2);
          Rng rng(seed, ti, uint64_t(c));
          const uint16_t neg = uint16_t(d16 | 0x8000);
          for (int64_t i = 0; i < m; ++i) {
            const uint64_t t = rng.next() % 3;  // -1, 0, +1 alike
            const uint16_t h = t == 0 ? neg : t == 1 ? uint16_t(0) : d16;
            std::memcpy(buf.data() + 2 * i, &h, 2);
          }
        });
      } else if (type == DType::I2_S) {
        const int64_t n_bytes = n / 4;
        const int64_t chunk_bytes = kTernaryChunkBlocks * kQK_K / 4;
        const int64_t n_chunks = (n_bytes + chunk_bytes - 1) / chunk_bytes;
        stream_chunks(w, n_chunks, threads, [&](int64_t c, std::vector<uint8_t>& buf) {
          buf.resize(size_t(std::min(chunk_bytes, n_bytes - c * chunk_bytes)));
          Rng rng(seed, ti, uint64_t(c));
          fill_from_table(rng, tables().two_bit, 81, buf.data(), int64_t(buf.size()));
        });
        uint8_t tail[kI2STail] = {};
        const float scale = fp16_to_f32(d16);
        std::memcpy(tail, &scale, 4);
        w.append(tail, sizeof tail);
      } else {
        const int64_t n_blocks = n / kQK_K;
        const int64_t n_chunks = (n_blocks + kTernaryChunkBlocks - 1) / kTernaryChunkBlocks;
        const int64_t block_bytes = dtype_traits(type).block_bytes;
        stream_chunks(w, n_chunks, threads, [&](int64_t c, std::vector<uint8_t>& buf) {
          const int64_t nb = std::min(kTernaryChunkBlocks, n_blocks - c * kTernaryChunkBlocks);
          buf.resize(size_t(nb * block_bytes));
          Rng rng(seed, ti, uint64_t(c));
          fill_tq_blocks(rng, type, d16, nb, buf.data());
        });
      }
    }
  }
  w.finish();

  CreateResult r;
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  r.file_bytes = f ? uint64_t(f.tellg()) : 0;
  r.n_tensors = specs.size();
  for (int64_t l = 0; l < hp.n_layer; ++l) {
    for (const std::string& what : block_linear_names()) {
      r.n_f16_linears += linear_type(block_linear_shape(hp, what).first) == DType::F16;
    }
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

HParams hparams_from_config_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) fail(path, ": cannot open config file");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": invalid JSON: ", e.what());
  }
  if (!j.is_object()) fail(path, ": expected a JSON object");

  auto find = [&](std::initializer_list<const char*> keys) -> const nlohmann::json* {
    for (const char* k : keys) {
      auto it = j.find(k);
      if (it != j.end() && !it->is_null()) return &*it;
    }
    return nullptr;
  };
  auto get_int = [&](std::initializer_list<const char*> keys, std::optional<int64_t> fallback) {
    const nlohmann::json* v = find(keys);
    if (!v) {
      if (fallback) return *fallback;
      fail(path, ": missing field ", *keys.begin());
    }
    if (!v->is_number_integer()) fail(path, ": field ", *keys.begin(), " must be an integer");
    return v->get<int64_t>();
  };
  auto get_float = [&](std::initializer_list<const char*> keys, float fallback) {
    const nlohmann::json* v = find(keys);
    if (!v) return fallback;
    if (!v->is_number()) fail(path, ": field ", *keys.begin(), " must be a number");
    return v->get<float>();
  };

  HParams hp;
  if (const nlohmann::json* a = find({"arch", "architecture"}); a && a->is_string()) {
    hp.arch = a->get<std::string>();
  }
  hp.n_vocab = get_int({"n_vocab", "vocab_size"}, std::nullopt);
  hp.n_embd = get_int({"n_embd", "hidden_size"}, std::nullopt);
  hp.n_ff = get_int({"n_ff", "intermediate_size"}, std::nullopt);
  hp.n_layer = get_int({"n_layer", "num_hidden_layers"}, std::nullopt);
  hp.n_head = get_int({"n_head", "num_attention_heads"}, std::nullopt);
  hp.n_head_kv = get_int({"n_head_kv", "num_key_value_heads"}, hp.n_head);
  hp.n_ctx_train = get_int({"n_ctx", "n_ctx_train", "max_position_embeddings"}, 2048);
  if (hp.n_head <= 0) fail(path, ": n_head must be positive");
  hp.rope_dim = get_int({"rope_dim", "head_dim"}, hp.n_embd / hp.n_head);
  hp.rope_theta = get_float({"rope_theta"}, 10000.0f);
  hp.rms_eps = get_float({"rms_eps", "rms_norm_eps"}, 1e-5f);
  if (const nlohmann::json* a = find({"act", "hidden_act"})) {
    if (!a->is_string()) fail(path, ": field act must be a string");
    auto act = activation_from_name(a->get<std::string>());
    if (!act) fail(path, ": act is '", a->get<std::string>(), "', expected relu2 or silu");
    hp.act = *act;
  }
  if (const nlohmann::json* t = find({"tied", "tie_word_embeddings"})) {
    if (!t->is_boolean()) fail(path, ": field tied must be true or false");
    hp.tied_head = t->get<bool>();
  }
  hp.validate(path);
  return hp;
}

}  // namespace trit::engine
