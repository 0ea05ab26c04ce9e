// Shared helpers of trit's compute shaders (included by every *.comp).
//
// Conventions of all shaders in this folder:
// - descriptor set 0, storage buffers only, bindings numbered in the order each header lists;
//   every buffer is declared as 32-bit words (uint, int or float arrays), so the plain modules
//   need no 8/16-bit storage feature;
// - workgroup size: local_size_x_id = SPEC_WG_SIZE (constant_id 0), a power of two; 64..256
//   is what the host should choose (the defaults below are what the module does unspecialised);
// - a workgroup whose index lies past the work returns as a whole (before any barrier); an
//   invocation past the work inside a live workgroup keeps taking part in barriers and writes
//   nothing.
// The specialization-constant ids are shared by all shaders (push_constants.h, enum SpecId):
//   0 workgroup size, 1 matmul path, 2 rows per workgroup (matvec), 3 tokens per workgroup
//   (matvec), 4 tile rows, 5 tile tokens, 6 rows per thread, 7 tokens per thread,
//   8 float weight type, 9 activation kind, 10 attention chunk, 11 max head_dim, 12 gemm k block,
//   13 rms_norm row in registers, 14..16 cooperative matrix shape M, N, K, 17 sequence table,
//   18 f16 KV cache, 19 attention backward stage.
#ifndef TRIT_COMMON_GLSL
#define TRIT_COMMON_GLSL

#define SPEC_WG_SIZE 0
#define SPEC_MATMUL_PATH 1
#define SPEC_MV_ROWS 2
#define SPEC_MV_TOKENS 3
#define SPEC_TILE_M 4
#define SPEC_TILE_N 5
#define SPEC_THREAD_M 6
#define SPEC_THREAD_N 7
#define SPEC_WEIGHT_TYPE 8
#define SPEC_ACTIVATION 9
#define SPEC_ATTN_CHUNK 10
#define SPEC_MAX_HEAD_DIM 11
#define SPEC_GEMM_KB 12
#define SPEC_NORM_VEC 13
#define SPEC_COOP_M 14
#define SPEC_COOP_N 15
#define SPEC_COOP_K 16
#define SPEC_SEQ_TABLE 17
#define SPEC_KV_F16 18
#define SPEC_ATTN_STAGE 19
#define SPEC_ATTN_FUSE_COMBINE 20
#define SPEC_ATTN_UNROLL 21
#define SPEC_ATTN_KEY_VEC 22
#define SPEC_MV_PAIR 23

// Float weight types as the shaders number them (push_constants.h, enum FloatWeightType).
#define WTYPE_F32 0u
#define WTYPE_F16 1u
#define WTYPE_BF16 2u
#define WTYPE_Q8_0 3u

// Matmul paths (push_constants.h, enum MatmulPath).
#define PATH_MATVEC 0u
#define PATH_TILED 1u

// The index of this workgroup along a dimension the host may have split over x and z because
// it exceeds maxComputeWorkGroupCount[0] (65535 on many devices): x + z * gl_NumWorkGroups.x.
uint group_x_z() {
  return gl_WorkGroupID.x + gl_WorkGroupID.z * gl_NumWorkGroups.x;
}
// The same over x and y (for 1-D grids of elementwise shaders).
uint group_x_y() {
  return gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x;
}

// ---- 16-bit floats out of 32-bit words (plain path: no 16-bit storage) ----

// Two 16-bit values stored in a little-endian uint: .x = low half (the even element).
vec2 f16x2(uint word) { return unpackHalf2x16(word); }
vec2 bf16x2(uint word) { return vec2(uintBitsToFloat(word << 16), uintBitsToFloat(word & 0xFFFF0000u)); }

// f as an IEEE half, rounded to nearest even, as the CPU's f32_to_fp16 (core/half.h) rounds it
// (packHalf2x16 leaves the rounding to the implementation).
uint f16_bits(float f) {
  uint x = floatBitsToUint(f);
  uint sign = (x >> 16) & 0x8000u;
  uint a = x & 0x7FFFFFFFu;
  if (a >= 0x7F800000u) return sign | 0x7C00u | (a > 0x7F800000u ? 0x200u : 0u);
  if (a >= 0x477FF000u) return sign | 0x7C00u;  // rounds to infinity
  if (a < 0x38800000u) {                        // a subnormal half or zero
    if (a < 0x33000000u) return sign;
    uint shift = 126u - (a >> 23);  // 14..24
    uint m = (a & 0x7FFFFFu) | 0x800000u;
    uint r = m >> shift;
    uint rem = m & ((1u << shift) - 1u);
    uint half_ulp = 1u << (shift - 1u);
    if (rem > half_ulp || (rem == half_ulp && (r & 1u) != 0u)) r += 1u;
    return sign | r;
  }
  uint r = (a >> 13) - ((127u - 15u) << 10);
  uint rem = a & 0x1FFFu;
  if (rem > 0x1000u || (rem == 0x1000u && (r & 1u) != 0u)) r += 1u;
  return sign | r;
}
// Two values as the halves of one word (a the low, even, element).
uint f16x2_bits(float a, float b) { return f16_bits(a) | (f16_bits(b) << 16); }

// ---- correctly rounded division ----
//
// a / b rounded to nearest even, as the CPU's IEEE division gives it (Vulkan lets OpFDiv be
// off by 2.5 ULP). Exact for finite a and positive normal b whose quotient is a normal float;
// other cases (zero, denormal, infinite or NaN operands, a non-positive or denormal b, or a
// quotient outside the normal range) take the hardware division, which agrees with IEEE on
// the special values. Long division of the 24-bit significands: about 25 iterations.
float div_rn(float a, float b) {
  uint ua = floatBitsToUint(a);
  uint ub = floatBitsToUint(b);
  uint ea = (ua >> 23) & 0xFFu;
  uint eb = (ub >> 23) & 0xFFu;
  if (ea == 0u || ea == 0xFFu || eb == 0u || eb == 0xFFu || (ub >> 31) != 0u) return a / b;
  uint ma = (ua & 0x7FFFFFu) | 0x800000u;
  uint mb = (ub & 0x7FFFFFu) | 0x800000u;
  // q = floor(ma * 2^k / mb) in [2^24, 2^25): 24 significand bits and a guard bit.
  int k = ma >= mb ? 24 : 25;
  uint r = ma;
  uint q = 0u;
  if (r >= mb) {
    q = 1u;
    r -= mb;
  }
  for (int i = 0; i < k; ++i) {
    r <<= 1;
    q <<= 1;
    if (r >= mb) {
      r -= mb;
      q |= 1u;
    }
  }
  uint mant = q >> 1;
  bool round_up = (q & 1u) != 0u && (r != 0u || (mant & 1u) != 0u);
  int biased = int(ea) - int(eb) + 151 - k;
  if (round_up) {
    mant += 1u;
    if (mant == 0x1000000u) {
      mant = 0x800000u;
      biased += 1;
    }
  }
  if (biased <= 0 || biased >= 255) return a / b;
  return uintBitsToFloat((ua & 0x80000000u) | (uint(biased) << 23) | (mant & 0x7FFFFFu));
}

// ---- packed 4 x int8 dot products ----
//
// dot4(a, b) = sum over bytes k of int8(a byte k) * int8(b byte k), exact.
#ifdef INT_DOT
// OpSDotKHR (SPV_KHR_integer_dot_product, opcode 4450) on packed operands: the trailing
// literal is the PackedVectorFormat operand, 0 = PackedVectorFormat4x8BitKHR. Needs the
// capabilities DotProductKHR (6019) and DotProductInput4x8BitPackedKHR (6018), i.e. the device
// feature shaderIntegerDotProduct (VK_KHR_shader_integer_dot_product or Vulkan 1.3).
#extension GL_EXT_spirv_intrinsics : require
spirv_instruction(extensions = ["SPV_KHR_integer_dot_product"], capabilities = [6019, 6018],
                  id = 4450)
int sdot_4x8_packed(uint a, uint b, spirv_literal int packed_vector_format);
int dot4(uint a, uint b) { return sdot_4x8_packed(a, b, 0); }
#else
int dot4(uint a, uint b) {
  int ia = int(a);
  int ib = int(b);
  return bitfieldExtract(ia, 0, 8) * bitfieldExtract(ib, 0, 8) +
         bitfieldExtract(ia, 8, 8) * bitfieldExtract(ib, 8, 8) +
         bitfieldExtract(ia, 16, 8) * bitfieldExtract(ib, 16, 8) +
         bitfieldExtract(ia, 24, 8) * bitfieldExtract(ib, 24, 8);
}
#endif

// ---- ternary codes ----
//
// The four 2-bit codes c in bits 8g..8g+7 of a T2 weight word (weights 4g..4g+3) as a packed
// int8x4 word of trits c - 1 (code 3, absent from valid data, gives 2 as on the CPU).
uint trits4(uint word, int g) {
  uint c = uint(bitfieldExtract(word, 8 * g, 8));        // c0 | c1 << 2 | c2 << 4 | c3 << 6
  uint t = c | (c << 6);                                  // c1 reaches bit 8
  uint u = (t | (t << 12)) & 0x03030303u;                 // c2 -> bit 16, c3 -> bit 24
  return ((u | 0x80808080u) - 0x01010101u) ^ 0x80808080u;  // bytes c - 1, no borrow between
}

// ---- TQ1_0 read in place (five trits a byte) ----
//
// A TQ1_0 row on the device is its blocks of 256 weights, 13 words each: the block's 48 qs and
// 4 qh bytes as in the file (its f16 scale is kept apart: block scales, or the tensor's one).
// A weight's code is base-3 digit n of a byte, taken as the CPU takes it: ((b * 3^n mod 256) *
// 3) >> 8. Weights 16w + 4e .. 16w + 4e + 3 of a block (e = 0..3; a T2 word w holds 16) are
// digit n of the four bytes of word tq1_source(w, e).
const uint TQ1_BLOCK_WORDS = 13u;

// The block's word (0..12) and the digit n of weights 16w + 4e .. + 3: w < 10: weights 32n + m
// of qs byte m < 32; w < 15: weights 160 + 16n + m of qs byte 32 + m; w = 15: weights 240 +
// 4n + m of qh byte m.
uvec2 tq1_source(uint w, uint e) {
  if (w < 10u) return uvec2(4u * (w & 1u) + e, w >> 1);
  if (w < 15u) return uvec2(8u + e, w - 10u);
  return uvec2(12u, e);
}

uint tq1_pow3(uint n) {
  return n == 0u ? 1u : n == 1u ? 3u : n == 2u ? 9u : n == 3u ? 27u : 81u;
}

// The codes (0..2) of the digit of the four bytes of x whose 3^n is pow3, one a byte.
uint tq1_codes4_pow(uint x, uint pow3) {
  uint lo = ((x & 0x00FF00FFu) * pow3) & 0x00FF00FFu;  // bytes 0 and 2, each mod 256
  uint hi = (((x >> 8) & 0x00FF00FFu) * pow3) & 0x00FF00FFu;
  return (((lo * 3u) >> 8) & 0x00030003u) | ((((hi * 3u) >> 8) & 0x00030003u) << 8);
}

// The codes (0..2) of digit n of the four bytes of x, one a byte.
uint tq1_codes4(uint x, uint n) {
  return tq1_codes4_pow(x, tq1_pow3(n));
}

// Four codes one a byte as the packed int8x4 trits c - 1 (trits4's form).
uint codes4_trits(uint c) {
  return ((c | 0x80808080u) - 0x01010101u) ^ 0x80808080u;
}

// Four codes one a byte as the 8 bits of a T2 word (code j at bits 2j).
uint codes4_t2(uint c) {
  uint t = c | (c >> 6);
  return (t & 0xFu) | ((t >> 12) & 0xF0u);
}

// int8 quantisation of v with scale s as the CPU's quantize_acts does it (NaN ends at -128).
int quantize_i8(float v, float s) {
  float y = v * s;
  y = y > -128.0 ? y : -128.0;
  y = y < 127.0 ? y : 127.0;
  return int(roundEven(y));
}

// Four values quantised with scale s, packed little-endian into one word.
uint pack4_i8(float a, float b, float c, float d, float s) {
  return (uint(quantize_i8(a, s)) & 0xFFu) | ((uint(quantize_i8(b, s)) & 0xFFu) << 8) |
         ((uint(quantize_i8(c, s)) & 0xFFu) << 16) | ((uint(quantize_i8(d, s)) & 0xFFu) << 24);
}

// act(g) * u of a gated feed-forward (kind: GatedActKind, 0 relu^2, 1 silu). gated_act.comp and
// the fused gate/up matvec both compute it here, so their bits agree.
float gated_value(uint kind, float g, float u) {
  precise float a;
  if (kind == 0u) {
    float r = g > 0.0 ? g : 0.0;
    a = r * r;
  } else {
    a = g / (1.0 + exp(-g));
  }
  precise float prod = a * u;
  return prod;
}

#endif  // TRIT_COMMON_GLSL
