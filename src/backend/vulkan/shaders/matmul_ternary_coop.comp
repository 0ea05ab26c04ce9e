#version 450
// matmul_ternary_coop: matmul_ternary's tiled path (uniform scale only) with the int8 products
// on cooperative matrices (VK_NV_cooperative_matrix with int8 A/B and int32 C/D, the matrix
// units of NVIDIA GPUs). The integer sums are exact, and the epilogue is matmul_ternary's:
//   y[t, r0 + r] = div_rn(d * float(isum[t, r]), qscale[t]) * out_scale
// so y equals the plain module's (and the CPU's) bit for bit.
//
// Bindings and push constants: matmul_ternary.comp's (binding 1, the block scales, is not
// read: this module serves pc.d != 0 only).
// Spec constants: 0 workgroup size = subgroups * subgroup size; 4 TILE_M rows x 5 TILE_N tokens
//   per workgroup; 6 FRAG_M x 7 FRAG_N cooperative matrices of 14 CM_M x 15 CM_N per subgroup;
//   16 CM_K (a device's int8 shape M x N x K). Subgroups tile the workgroup's output
//   (TILE_M / (FRAG_M * CM_M)) x (TILE_N / (FRAG_N * CM_N)); CM_K divides 256.
// Shared memory: 4 * 68 * (TILE_M + TILE_N) bytes (64 x 64: 34,816 B); the int32 sums reuse it
//   (4 * TILE_N * (TILE_M + 4) bytes).
// Dispatch: as matmul_ternary's tiled path: x (and z) over ceil(rows / TILE_M), y over
//   ceil(n_tokens / TILE_N).
// Needs: cooperativeMatrix (NV), shaderInt8, vulkanMemoryModel, subgroup basic operations.
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_NV_cooperative_matrix : require
#extension GL_NV_integer_cooperative_matrix : require
#extension GL_EXT_shader_explicit_arithmetic_types_int8 : require
#extension GL_EXT_shader_explicit_arithmetic_types_int32 : require
#include "common.glsl"

layout(local_size_x_id = SPEC_WG_SIZE) in;
layout(constant_id = SPEC_WG_SIZE) const uint WG_SIZE = 128;
layout(constant_id = SPEC_TILE_M) const uint TILE_M = 64;
layout(constant_id = SPEC_TILE_N) const uint TILE_N = 64;
layout(constant_id = SPEC_THREAD_M) const uint FRAG_M = 2;
layout(constant_id = SPEC_THREAD_N) const uint FRAG_N = 4;
layout(constant_id = SPEC_COOP_M) const uint CM_M = 16;
layout(constant_id = SPEC_COOP_N) const uint CM_N = 8;
layout(constant_id = SPEC_COOP_K) const uint CM_K = 32;

layout(std430, set = 0, binding = 0) readonly buffer W { uint w[]; };
layout(std430, set = 0, binding = 1) readonly buffer DBlk { float dblk[]; };
layout(std430, set = 0, binding = 2) readonly buffer Q { uvec4 q4[]; };
layout(std430, set = 0, binding = 3) readonly buffer QScale { float qscale[]; };
layout(std430, set = 0, binding = 4) writeonly buffer Y { float y[]; };

layout(push_constant) uniform Push {
  uint n_in;
  uint rows;
  uint r0;
  uint n_tokens;
  uint y_stride;
  float d;
  float out_scale;
} pc;

// One 256-weight block per step: a row of the shared tiles is 64 packed int8x4 words plus 4 of
// padding (rows start 16 bytes apart, off the same banks).
const uint KW = 64;
const uint KS = KW + 4;
const uint CS = TILE_M + 4;  // int32 sums: one column of TILE_M rows per token
const uint SH_AB = (TILE_M + TILE_N) * KS;
const uint SH_C = TILE_N * CS;
shared uint sh[SH_AB > SH_C ? SH_AB : SH_C];

// Per thread: the T2 words and activation words of one block, loaded before the previous
// block's products so that the loads overlap them.
const uint A_WORDS = TILE_M * 16;
const uint B_VECS = TILE_N * KW / 4;
const uint A_PER = (A_WORDS + WG_SIZE - 1) / WG_SIZE;
const uint B_PER = (B_VECS + WG_SIZE - 1) / WG_SIZE;

void main() {
  uint row0 = group_x_z() * TILE_M;
  uint tok0 = gl_WorkGroupID.y * TILE_N;
  if (row0 >= pc.rows || tok0 >= pc.n_tokens) return;
  uint tid = gl_LocalInvocationID.x;
  uint n_words = pc.n_in / 16;
  uint q_vecs = pc.n_in / 16;  // uvec4 per token row
  uint n_blocks = pc.n_in / 256;

  const uint SG_M = TILE_M / (FRAG_M * CM_M);
  uint sg = gl_SubgroupID;
  uint sm = (sg % SG_M) * FRAG_M * CM_M;  // this subgroup's first row in the tile
  uint sn = (sg / SG_M) * FRAG_N * CM_N;  // and first token

  icoopmatNV<32, gl_ScopeSubgroup, CM_M, CM_N> acc[FRAG_M * FRAG_N];
  for (uint f = 0; f < FRAG_M * FRAG_N; ++f) {
    acc[f] = icoopmatNV<32, gl_ScopeSubgroup, CM_M, CM_N>(0);
  }

  uint a_reg[A_PER];
  uvec4 b_reg[B_PER];
  for (uint b = 0; b <= n_blocks; ++b) {
    if (b > 0) {
      // Block b - 1 from registers into shared memory: weights as trits, row m at m * KS;
      // activations, token n at (TILE_M + n) * KS.
      for (uint j = 0; j < A_PER; ++j) {
        uint i = tid + j * WG_SIZE;
        if (i < A_WORDS) {
          uint m = i / 16, k = i % 16;
          for (int g = 0; g < 4; ++g) sh[m * KS + 4 * k + uint(g)] = trits4(a_reg[j], g);
        }
      }
      for (uint j = 0; j < B_PER; ++j) {
        uint i = tid + j * WG_SIZE;
        if (i < B_VECS) {
          uint n = i / (KW / 4), k = 4 * (i % (KW / 4));
          uint base = (TILE_M + n) * KS + k;
          sh[base] = b_reg[j].x;
          sh[base + 1] = b_reg[j].y;
          sh[base + 2] = b_reg[j].z;
          sh[base + 3] = b_reg[j].w;
        }
      }
      barrier();
    }
    if (b < n_blocks) {
      for (uint j = 0; j < A_PER; ++j) {
        uint i = tid + j * WG_SIZE;
        uint m = i / 16, k = i % 16;
        a_reg[j] = i < A_WORDS && row0 + m < pc.rows ? w[(row0 + m) * n_words + 16 * b + k]
                                                      : 0x55555555u;  // code 1: trit 0
      }
      for (uint j = 0; j < B_PER; ++j) {
        uint i = tid + j * WG_SIZE;
        uint n = i / (KW / 4), k = i % (KW / 4);
        b_reg[j] = i < B_VECS && tok0 + n < pc.n_tokens ? q4[(tok0 + n) * q_vecs + 16 * b + k]
                                                         : uvec4(0);
      }
    }
    if (b > 0) {
      for (uint kk = 0; kk < 256 / CM_K; ++kk) {
        uint kw = kk * (CM_K / 4);  // first word of this k step in a shared row
        icoopmatNV<8, gl_ScopeSubgroup, CM_M, CM_K> fa[FRAG_M];
        icoopmatNV<8, gl_ScopeSubgroup, CM_K, CM_N> fb[FRAG_N];
        for (uint i = 0; i < FRAG_M; ++i) {
          coopMatLoadNV(fa[i], sh, (sm + i * CM_M) * KS + kw, KS, false);
        }
        for (uint j = 0; j < FRAG_N; ++j) {
          // B is K x N with token columns: a token's k values are one shared row.
          coopMatLoadNV(fb[j], sh, (TILE_M + sn + j * CM_N) * KS + kw, KS, true);
        }
        for (uint i = 0; i < FRAG_M; ++i) {
          for (uint j = 0; j < FRAG_N; ++j) {
            acc[i * FRAG_N + j] = coopMatMulAddNV(fa[i], fb[j], acc[i * FRAG_N + j]);
          }
        }
      }
      barrier();
    }
  }

  // The sums through shared memory (the element order of a cooperative matrix is the
  // device's), token-major so that the stores of y are contiguous.
  for (uint i = 0; i < FRAG_M; ++i) {
    for (uint j = 0; j < FRAG_N; ++j) {
      coopMatStoreNV(acc[i * FRAG_N + j], sh, (sn + j * CM_N) * CS + sm + i * CM_M, CS, true);
    }
  }
  barrier();
  for (uint i = tid; i < TILE_M * TILE_N; i += WG_SIZE) {
    uint n = i / TILE_M, m = i % TILE_M;
    if (row0 + m >= pc.rows || tok0 + n >= pc.n_tokens) continue;
    precise float p = pc.d * float(int(sh[n * CS + m]));
    y[(tok0 + n) * pc.y_stride + pc.r0 + row0 + m] = div_rn(p, qscale[tok0 + n]) * pc.out_scale;
  }
}
