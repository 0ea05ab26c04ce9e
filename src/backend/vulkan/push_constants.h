// Push-constant blocks and specialization-constant ids of the compute shaders in shaders/.
// Each struct is byte for byte the `layout(push_constant)` block of the shader it is named
// after (4-byte members, in order); each shader's header comment says what the fields mean,
// its bindings and its dispatch grid.
#pragma once

#include <cstdint>

namespace trit::vk {

// constant_id values, shared by all shaders (shaders/common.glsl, SPEC_*).
enum class SpecId : uint32_t {
  WorkgroupSize = 0,  // local_size_x; a power of two, 64..256
  MatmulPath = 1,     // MatmulPath below
  MvRows = 2,         // matvec: output rows per workgroup
  MvTokens = 3,       // matvec: tokens per workgroup
  TileM = 4,          // tiled: output rows per workgroup
  TileN = 5,          // tiled: tokens per workgroup
  ThreadM = 6,        // tiled: rows per thread; (TileM / ThreadM) * (TileN / ThreadN) == WG
  ThreadN = 7,        // tiled: tokens per thread
  WeightType = 8,     // FloatWeightType below (matmul_float, embedding)
  Activation = 9,     // GatedActKind below
  AttnChunk = 10,     // attention chunk C (keys per partial), e.g. 64 or 128
  MaxHeadDim = 11,    // attention: upper bound of head_dim (sizes shared memory)
};

enum class MatmulPath : uint32_t { Matvec = 0, Tiled = 1 };
enum class FloatWeightType : uint32_t { F32 = 0, F16 = 1, BF16 = 2, Q8_0 = 3 };
enum class GatedActKind : uint32_t { Relu2 = 0, Silu = 1 };

// quantize_acts.comp: x (n_tokens, n) -> int8 q packed 4 a word + qscale (n_tokens).
struct QuantizeActsPush {
  uint32_t n_tokens;
  uint32_t n;  // values per token, a multiple of 4
};

// matmul_ternary.comp: T2 weight piece x quantised token tile -> y columns [r0, r0 + rows).
struct MatmulTernaryPush {
  uint32_t n_in;      // weights per row, a multiple of 256
  uint32_t rows;      // rows of the weight piece
  uint32_t r0;        // first output column (the piece's first row in the whole weight)
  uint32_t n_tokens;  // tokens of the tile
  uint32_t y_stride;  // floats per y row (n_out of the whole weight)
  float d;            // uniform weight scale; 0: per-256-block scales from binding 1
  float out_scale;    // multiplies the result (llama.cpp's per-tensor `.scale`); usually 1
};

// matmul_float.comp: float weight piece x f32 token tile -> y columns [r0, r0 + rows).
struct MatmulFloatPush {
  uint32_t n_in;  // values per weight row (even for f16/bf16, a multiple of 32 for q8_0)
  uint32_t rows;
  uint32_t r0;
  uint32_t n_tokens;
  uint32_t y_stride;
  float alpha;  // y = alpha * W x (+ beta * y)
  float beta;   // 0: y is not read; 1: LoRA accumulates into a bitlinear's output
};

// embedding.comp: out[t] = table row tokens[t], for ids in [r0, r0 + rows).
struct EmbeddingPush {
  uint32_t n_embd;
  uint32_t rows;  // rows of the table piece
  uint32_t r0;    // first token id of the piece
  uint32_t n_tokens;
};

// rms_norm.comp: y = x * rstd * g per token; rstd optionally saved.
struct RmsNormPush {
  uint32_t n_tokens;
  uint32_t n;
  float eps;
  uint32_t write_rstd;  // nonzero: write rstd (n_tokens) to binding 3
};

// rope.comp: NeoX rotation in place, angles from a host table piece.
struct RopePush {
  uint32_t n_tokens;
  uint32_t n_heads;
  uint32_t head_dim;
  uint32_t rope_dim;  // even, <= head_dim
  uint32_t pos0;      // position of the tile's first token
  uint32_t tab_r0;    // position of the table piece's first row
  uint32_t tab_rows;  // rows of the table piece
  uint32_t inverse;   // nonzero: rotate by -angle (backward pass)
};

// attention.comp: chunk partials of query tokens [t0, t0 + n_q) against one KV piece.
struct AttentionPush {
  uint32_t n_q;   // query tokens of this dispatch
  uint32_t t0;    // first of them, as a row of the token tile
  uint32_t pos0;  // position of the tile's row 0
  uint32_t n_head;
  uint32_t n_head_kv;
  uint32_t head_dim;   // <= MaxHeadDim
  uint32_t kv_stride;  // floats per cache row (n_embd_kv)
  uint32_t kv_r0;      // first position of the KV piece, a multiple of AttnChunk
  uint32_t kv_rows;    // positions in the piece
  uint32_t n_chunks;   // ceil((pos0 + t0 + n_q) / AttnChunk): scratch records per (query, head)
  float scale;         // 1 / sqrt(float(head_dim))
};

// attention_combine.comp: merges the partials into out rows [t0, t0 + n_q).
struct AttentionCombinePush {
  uint32_t n_q;
  uint32_t t0;
  uint32_t pos0;
  uint32_t n_head;
  uint32_t head_dim;
  uint32_t n_chunks;
};

// gated_act.comp: out = act(gate) * up over n values.
struct GatedActPush {
  uint32_t n;
};

// add.comp: y += alpha * x over n values.
struct AddPush {
  uint32_t n;
  float alpha;
};

static_assert(sizeof(QuantizeActsPush) == 8);
static_assert(sizeof(MatmulTernaryPush) == 28);
static_assert(sizeof(MatmulFloatPush) == 28);
static_assert(sizeof(EmbeddingPush) == 16);
static_assert(sizeof(RmsNormPush) == 16);
static_assert(sizeof(RopePush) == 32);
static_assert(sizeof(AttentionPush) == 44);
static_assert(sizeof(AttentionCombinePush) == 24);
static_assert(sizeof(GatedActPush) == 4);
static_assert(sizeof(AddPush) == 8);
// Vulkan guarantees maxPushConstantsSize >= 128 bytes.
static_assert(sizeof(AttentionPush) <= 128 && sizeof(RopePush) <= 128);

}  // namespace trit::vk
