// Push-constant blocks and specialization-constant ids of the compute shaders in shaders/.
// Each struct is byte for byte the `layout(push_constant)` block of the shader it is named
// after (4-byte members, in order); each shader's header comment says what the fields mean,
// its bindings and its dispatch grid.
#pragma once

#include <cstdint>

namespace trit::engine::vk {

// constant_id values, shared by all shaders (shaders/common.glsl, SPEC_*).
enum class SpecId : uint32_t {
  WorkgroupSize = 0,  // local_size_x; a power of two, 64..256
  MatmulPath = 1,     // MatmulPath below
  MvRows = 2,         // matvec: output rows per workgroup
  MvTokens = 3,       // matvec: tokens per workgroup
  TileM = 4,          // tiled: output rows per workgroup; gemm_f32: rows of the C tile
  TileN = 5,          // tiled: tokens per workgroup; gemm_f32: columns of the C tile
  ThreadM = 6,        // tiled: rows per thread; (TileM / ThreadM) * (TileN / ThreadN) == WG;
                      // matmul_ternary_coop: cooperative matrices per subgroup along rows
  ThreadN = 7,        // tiled, matmul_transposed: tokens per thread; matmul_ternary_coop:
                      // cooperative matrices per subgroup along tokens
  WeightType = 8,     // FloatWeightType below (matmul_float, embedding)
  Activation = 9,     // GatedActKind below
  AttnChunk = 10,     // attention chunk C (keys per partial), e.g. 64 or 128
  MaxHeadDim = 11,    // attention: upper bound of head_dim (sizes shared memory)
  GemmKBlock = 12,    // gemm_f32: k values staged per barrier
  NormVec = 13,       // rms_norm: 1 holds the row in registers (rms_norm_spec)
  CoopM = 14,         // matmul_ternary_coop: the cooperative matrix shape M x N x K
  CoopN = 15,
  CoopK = 16,
  SeqTable = 17,   // attention, attention_combine, rope_kv: 1 reads each query's sequence from a
                   // table (decoding rows of several sequences of one KV pool in one dispatch)
  KvF16 = 18,      // attention, rope_kv: 1 when the KV cache holds halves (two a word)
  AttnStage = 19,  // attention_backward_tiled: 0 max, 1 sums, 2 dq
  AttnFuseCombine = 20,  // attention (decoding): 1 merges the partials in the last workgroup
  AttnUnroll = 21,       // attention: key and value loads issued together (a multiple of 2)
  AttnKeyVec = 22,       // attention (decoding): 16-byte loads of a key row issued together
  MvPair = 23,           // matvec_ternary: 1 takes a subgroup's rows two at a time
};

enum class MatmulPath : uint32_t { Matvec = 0, Tiled = 1 };
enum class FloatWeightType : uint32_t { F32 = 0, F16 = 1, BF16 = 2, Q8_0 = 3 };
enum class GatedActKind : uint32_t { Relu2 = 0, Silu = 1 };

// quantize_acts.comp: x (n_tokens, n) -> int8 q packed 4 a word + qscale (n_tokens).
struct QuantizeActsPush {
  uint32_t n_tokens;
  uint32_t n;        // values per token, a multiple of 4
  uint32_t q_words;  // words per q row (>= n / 4); the words past n / 4 are zeroed
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

// tq1_codes.comp: T2 words of TQ1_0 rows kept in place.
struct Tq1CodesPush {
  uint32_t words;
};

struct Tq2CodesPush {
  uint32_t blocks;
};

// matvec_ternary.comp: a few tokens against up to four T2 weight pieces (decoding).
struct MatvecTernaryPush {
  uint32_t n_in;      // a multiple of 256
  uint32_t segments;  // 1..4
  uint32_t gated;     // nonzero: segments 0, 1 are gate and up; y_2 gets act(gate) * up
  uint32_t add;       // nonzero: the outputs are added to binding 10 as well
  float eps;          // the input norm's (matvec_norm_ternary)
  uint32_t n_tokens;  // rows of q (1 with the norm)
  uint32_t pad[2] = {0, 0};
  uint32_t rows[4];    // rows of each segment's piece
  uint32_t r0[4];      // output column of each piece's first row
  uint32_t group0[4];  // first workgroup of each segment
  float d[4];          // uniform weight scales (nonzero)
  float out_scale[4];
  uint32_t y_stride[4];  // floats between one token's outputs and the next's, per segment
};

// rope_kv.comp: rope on q in place, rope(k) and v stored into cache rows pos0...
struct RopeKvPush {
  uint32_t n_tokens;
  uint32_t n_head;
  uint32_t n_head_kv;
  uint32_t head_dim;
  uint32_t rope_dim;
  uint32_t pos0;
  uint32_t tab_r0;
  uint32_t tab_rows;
};

// store_kv_f16.comp: rows of f32 values into an f16 cache, two halves a word.
struct StoreKvF16Push {
  uint32_t n_words;
  uint32_t dst0;  // the first word written in the bound piece
};

static_assert(sizeof(QuantizeActsPush) == 12);
static_assert(sizeof(MatvecTernaryPush) == 128);  // the least maxPushConstantsSize
static_assert(sizeof(RopeKvPush) == 32);
static_assert(sizeof(MatmulTernaryPush) == 28);
static_assert(sizeof(MatmulFloatPush) == 28);
static_assert(sizeof(EmbeddingPush) == 16);
static_assert(sizeof(RmsNormPush) == 16);
static_assert(sizeof(RopePush) == 32);
static_assert(sizeof(AttentionPush) == 44);
static_assert(sizeof(AttentionCombinePush) == 24);
static_assert(sizeof(GatedActPush) == 4);
static_assert(sizeof(AddPush) == 8);
static_assert(sizeof(Tq1CodesPush) == 4 && sizeof(Tq2CodesPush) == 4);
// Vulkan guarantees maxPushConstantsSize >= 128 bytes.
static_assert(sizeof(AttentionPush) <= 128 && sizeof(RopePush) <= 128);

// ---- training (the backward ops of the family files) ----

enum class GemmMode : uint32_t { Set = 0, Accumulate = 1, AddScaled = 2 };

// gemm_f32.comp: C (m, n) from A(i, k) = a[a_off + i a_row + k a_col] and
// B(k, j) = b[b_off + k b_row + j b_col]; C(i, j) = c[c_off + i c_row + j] (offsets in floats).
struct GemmF32Push {
  uint32_t m, n, k;
  uint32_t a_off, a_row, a_col;
  uint32_t b_off, b_row, b_col;
  uint32_t c_off, c_row;
  uint32_t mode;  // GemmMode
  float a_scale;  // multiplies every A value before its product
  float post;     // AddScaled: C += sum * post
};

// matmul_ternary_t / matmul_float_t (matmul_transposed.comp): dx += scale * W^T dy, one piece.
struct MatmulTransposedPush {
  uint32_t n_in;       // columns of dx (weights per row)
  uint32_t rows;       // rows of the weight piece
  uint32_t r0;         // dy column of the piece's first row
  uint32_t n_tokens;   // tokens of the tile
  uint32_t dy_stride;  // floats per dy row
  float d;             // ternary uniform scale; 0: block scales
  float scale;         // dx += scale * sum on the last piece
  uint32_t first;      // nonzero: the sum starts from 0, else from the accumulator
  uint32_t last;       // nonzero: add into dx, else store the accumulator
  uint32_t row_in;     // ternary: weights per stored row (n_in rounded up to 256)
};

// matmul_ternary_t_coop / matmul_float_t_coop (matmul_transposed_coop.comp): the transposed
// product on f16 cooperative matrices, one piece, optionally split over its rows.
struct MatmulTransposedCoopPush {
  MatmulTransposedPush base;  // dy_stride: words of dyh per row
  uint32_t split_rows;        // rows a workgroup sums (a multiple of 32); 0: all of them
};

// transposed_reduce.comp: the splits of a split transposed product, added in order.
struct TransposedReducePush {
  uint32_t n_tokens;
  uint32_t n_in;
  uint32_t splits;
  float dq;     // the weight's uniform scale, or 1
  float scale;  // dx += scale * ...
  uint32_t first;
  uint32_t last;
};

// dy_to_f16.comp: dy rows as halves scaled by a power of two each.
struct DyToF16Push {
  uint32_t n_tokens;
  uint32_t n;          // values a row
  uint32_t dy_stride;  // floats per dy row
  uint32_t dyh_words;  // words per dyh row (2 * dyh_words >= n)
};

// rms_norm_backward.comp.
struct RmsNormBackwardPush {
  uint32_t n_tokens;
  uint32_t n;
};

// dropout.comp: mode 0 forward (xd = keep ? x * inv : 0), mode 1 backward (dx += dxd * inv).
struct DropoutPush {
  uint32_t n;
  uint32_t mode;
  uint32_t masked;              // backward: skip where xd == 0 (p > 0)
  uint32_t start_lo, start_hi;  // mix(key ^ mix(salt)) + global index of element 0
  uint32_t thr_lo, thr_hi;      // ceil(p * 2^53)
  float inv;                    // 1 / (1 - p)
};

// cross_entropy.comp: per-token loss and, when write_grad, dlogits over the logits.
struct CrossEntropyPush {
  uint32_t n_tokens;
  uint32_t n_vocab;
  float inv_norm;  // 1 / max(norm, 1)
  uint32_t write_grad;
};

// attention_backward_wg.comp (stages 0..2) and attention_backward_kv_wg.comp.
struct AttentionBackwardPush {
  uint32_t n_q;     // query tokens of the segment
  uint32_t q_pos0;  // position of its row 0
  uint32_t n_head;
  uint32_t n_head_kv;
  uint32_t head_dim;       // attention: <= MaxHeadDim; attention_backward(_kv): == MaxHeadDim
  uint32_t kv_stride;      // floats per K/V row (n_embd_kv)
  uint32_t kv_r0;          // position of the K/V segment's row 0
  uint32_t kv_rows;        // rows of the K/V segment
  uint32_t stage;          // attention_backward: 0 max, 1 sums, 2 dq; _kv: heads of a group
  uint32_t first;          // the K/V segment holds key 0
  uint32_t head_in_group;  // attention_backward_kv: which query head of each KV head
  float scale;             // 1 / sqrt(float(head_dim))
};

// attention_backward_tiled.comp (stages 0..2) and attention_backward_kv_tiled.comp: every
// sequence of a batch in one dispatch (a table binding gives each one's rows).
struct AttentionBackwardTiledPush {
  uint32_t n_head;
  uint32_t n_head_kv;
  uint32_t kv_stride;  // floats per K/V row (n_embd_kv)
  float scale;         // 1 / sqrt(float(head_dim))
};

static_assert(sizeof(GemmF32Push) == 56);
static_assert(sizeof(MatmulTransposedPush) == 40);
static_assert(sizeof(RmsNormBackwardPush) == 8);
static_assert(sizeof(DropoutPush) == 32);
static_assert(sizeof(CrossEntropyPush) == 16);
static_assert(sizeof(AttentionBackwardPush) == 48);

// ---- optimizer (optimizer.cpp) ----

// adamw.comp.
struct AdamWPush {
  uint32_t n;
  float grad_scale;
  float decay, one_minus_beta1, beta2, one_minus_beta2, bc2_sqrt, eps, neg_step_size;
};

// sum_squares.comp: one sum per row.
struct SumSquaresPush {
  uint32_t rows;
  uint32_t cols;
};

static_assert(sizeof(AdamWPush) == 36);
static_assert(sizeof(SumSquaresPush) == 8);

}  // namespace trit::engine::vk
