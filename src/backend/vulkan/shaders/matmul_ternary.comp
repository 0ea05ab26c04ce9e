#version 450
// matmul_ternary: bitlinear y = (T2 ternary weights) x (int8-quantised activations), one
// weight piece (output rows [r0, r0 + rows)) against one token tile (DESIGN section 2; CPU
// reference ternary_matmul_scalar in backend/cpu/kernels.cpp).
//   uniform scale (pc.d != 0):  y[t, r0 + r] = (d * float(isum[t, r])) / qscale[t] * out_scale
//   per-block scales (d == 0):  acc = sum over blocks b in order of (d_b * float(isum_b)),
//                               y[t, r0 + r] = acc / qscale[t] * out_scale
// isum is the exact int32 sum of trit * q; products and sums are rounded one by one in the
// CPU's order (`precise`, correctly rounded division), so the result equals the CPU's bit for
// bit, and the plain and INT_DOT modules give identical y.
//
// T2 layout: row r of the piece is n_in / 16 uint words; word w holds weights 16w..16w+15,
// weight j at bits 2 * (j % 16), as a code c in {0, 1, 2} meaning the trit c - 1.
//
// Bindings (set 0):
//   0 w      uint [rows * n_in / 16]    T2 codes of the weight piece              (read)
//   1 dblk   float[rows * n_in / 256]   per-256-block scales of the piece; read only when
//                                       d == 0 (bind any buffer otherwise)       (read)
//   2 q      uint [n_tokens * n_in / 4] int8 activations of the token tile         (read)
//   3 qscale float[n_tokens]            activation scales s_x                      (read)
//   4 y      float[n_tokens * y_stride] output tile; columns [r0, r0 + rows) written (write)
// Push constants: MatmulTernaryPush { n_in, rows, r0, n_tokens, y_stride, d, out_scale };
//   n_in a multiple of 256.
// Spec constants: 0 workgroup size (power of two), 1 path (0 matvec, 1 tiled), and
//   matvec: 2 MV_ROWS output rows per workgroup, 3 MV_TOKENS tokens per workgroup;
//   tiled:  4 TILE_M rows x 5 TILE_N tokens per workgroup, each thread THREAD_M (6) rows x
//           THREAD_N (7) tokens; (TILE_M / THREAD_M) * (TILE_N / THREAD_N) must equal the
//           workgroup size and THREAD_M, THREAD_N divide TILE_M, TILE_N.
// Shared memory: matvec 4 * WG * MV_ROWS * MV_TOKENS bytes (default 1 KiB);
//   tiled 4 * 65 * (TILE_M + TILE_N) bytes (default 64 x 32: 24960 B; keep it under
//   maxComputeSharedMemorySize, which may be 16 KiB: e.g. 32 x 16 there).
// Dispatch: row groups G = ceil(rows / MV_ROWS) (matvec) or ceil(rows / TILE_M) (tiled), split
//   over x and z when G > maxComputeWorkGroupCount[0]: x = min(G, 65535), z = ceil(G / x);
//   y = ceil(n_tokens / MV_TOKENS) (matvec) or ceil(n_tokens / TILE_N) (tiled).
//   Use matvec for small token counts (decode: n_tokens = 1, MV_TOKENS 1..4), tiled otherwise.
// Variants: plain (32-bit storage and int32 arithmetic only); -DINT_DOT=1 uses OpSDotKHR on
//   packed int8x4 (needs shaderIntegerDotProduct).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = SPEC_WG_SIZE) in;
layout(constant_id = SPEC_WG_SIZE) const uint WG_SIZE = 128;
layout(constant_id = SPEC_MATMUL_PATH) const uint PATH = PATH_MATVEC;
layout(constant_id = SPEC_MV_ROWS) const uint MV_ROWS = 2;
layout(constant_id = SPEC_MV_TOKENS) const uint MV_TOKENS = 1;
layout(constant_id = SPEC_TILE_M) const uint TILE_M = 64;
layout(constant_id = SPEC_TILE_N) const uint TILE_N = 32;
layout(constant_id = SPEC_THREAD_M) const uint THREAD_M = 4;
layout(constant_id = SPEC_THREAD_N) const uint THREAD_N = 4;

layout(std430, set = 0, binding = 0) readonly buffer W { uint w[]; };
layout(std430, set = 0, binding = 1) readonly buffer DBlk { float dblk[]; };
layout(std430, set = 0, binding = 2) readonly buffer Q { uint q[]; };
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

// Tiled: one 256-weight block per step; a row of the shared tiles is 64 packed int8x4 words
// plus one of padding (bank conflicts).
const uint KW = 64;
const uint KS = KW + 1;
const uint MV_VALUES = MV_ROWS * MV_TOKENS;
const uint SH_MATVEC = WG_SIZE * MV_VALUES;
const uint SH_TILED = (TILE_M + TILE_N) * KS;
const uint SH_WORDS = PATH == PATH_MATVEC ? SH_MATVEC : SH_TILED;
shared uint sh[SH_WORDS];

void store(uint t, uint r, float v) {
  y[t * pc.y_stride + pc.r0 + r] = v * pc.out_scale;
}

// ---- matvec: a workgroup takes MV_ROWS rows x MV_TOKENS tokens; threads split n_in ----

void matvec(uint row0, uint tok0) {
  uint tid = gl_LocalInvocationID.x;
  uint n_words = pc.n_in / 16;  // weight words per row
  uint q_words = pc.n_in / 4;   // activation words per token

  if (pc.d != 0.0) {
    // Uniform scale: exact integer sums in any order, one tree reduction at the end.
    int acc[MV_VALUES];
    for (uint v = 0; v < MV_VALUES; ++v) acc[v] = 0;
    for (uint k = tid; k < n_words; k += WG_SIZE) {
      uint qv[MV_TOKENS * 4];
      for (uint t = 0; t < MV_TOKENS; ++t) {
        bool ok = tok0 + t < pc.n_tokens;
        for (uint e = 0; e < 4; ++e) qv[t * 4 + e] = ok ? q[(tok0 + t) * q_words + 4 * k + e] : 0u;
      }
      for (uint r = 0; r < MV_ROWS; ++r) {
        if (row0 + r >= pc.rows) break;
        uint word = w[(row0 + r) * n_words + k];
        uint t0 = trits4(word, 0), t1 = trits4(word, 1), t2 = trits4(word, 2), t3 = trits4(word, 3);
        for (uint t = 0; t < MV_TOKENS; ++t) {
          acc[r * MV_TOKENS + t] += dot4(t0, qv[t * 4]) + dot4(t1, qv[t * 4 + 1]) +
                                    dot4(t2, qv[t * 4 + 2]) + dot4(t3, qv[t * 4 + 3]);
        }
      }
    }
    for (uint v = 0; v < MV_VALUES; ++v) sh[v * WG_SIZE + tid] = uint(acc[v]);
    barrier();
    for (uint s = WG_SIZE / 2; s > 0; s >>= 1) {
      if (tid < s) {
        for (uint v = 0; v < MV_VALUES; ++v) {
          sh[v * WG_SIZE + tid] = uint(int(sh[v * WG_SIZE + tid]) + int(sh[v * WG_SIZE + tid + s]));
        }
      }
      barrier();
    }
    if (tid < MV_VALUES) {
      uint r = tid / MV_TOKENS, t = tid % MV_TOKENS;
      if (row0 + r < pc.rows && tok0 + t < pc.n_tokens) {
        int isum = int(sh[tid * WG_SIZE]);
        precise float p = pc.d * float(isum);
        store(tok0 + t, row0 + r, div_rn(p, qscale[tok0 + t]));
      }
    }
  } else {
    // Per-block scales: each thread takes whole 256-blocks (round by round, WG_SIZE blocks a
    // round); thread v < MV_VALUES then adds the block products of its (row, token) in block
    // order, as the CPU does.
    uint n_blocks = pc.n_in / 256;
    precise float total = 0.0;  // owned by thread tid < MV_VALUES
    for (uint b0 = 0; b0 < n_blocks; b0 += WG_SIZE) {
      uint b = b0 + tid;
      int acc[MV_VALUES];
      for (uint v = 0; v < MV_VALUES; ++v) acc[v] = 0;
      if (b < n_blocks) {
        for (uint k = 16 * b; k < 16 * b + 16; ++k) {
          for (uint r = 0; r < MV_ROWS; ++r) {
            if (row0 + r >= pc.rows) break;
            uint word = w[(row0 + r) * n_words + k];
            uint t0 = trits4(word, 0), t1 = trits4(word, 1), t2 = trits4(word, 2), t3 = trits4(word, 3);
            for (uint t = 0; t < MV_TOKENS; ++t) {
              if (tok0 + t >= pc.n_tokens) break;
              uint qb = (tok0 + t) * q_words + 4 * k;
              acc[r * MV_TOKENS + t] += dot4(t0, q[qb]) + dot4(t1, q[qb + 1]) +
                                        dot4(t2, q[qb + 2]) + dot4(t3, q[qb + 3]);
            }
          }
        }
      }
      for (uint v = 0; v < MV_VALUES; ++v) {
        uint r = v / MV_TOKENS;
        float db = (b < n_blocks && row0 + r < pc.rows) ? dblk[(row0 + r) * n_blocks + b] : 0.0;
        precise float p = db * float(acc[v]);
        sh[v * WG_SIZE + tid] = floatBitsToUint(p);
      }
      barrier();
      if (tid < MV_VALUES) {
        uint count = min(WG_SIZE, n_blocks - b0);
        for (uint i = 0; i < count; ++i) total = total + uintBitsToFloat(sh[tid * WG_SIZE + i]);
      }
      barrier();
    }
    if (tid < MV_VALUES) {
      uint r = tid / MV_TOKENS, t = tid % MV_TOKENS;
      if (row0 + r < pc.rows && tok0 + t < pc.n_tokens) {
        store(tok0 + t, row0 + r, div_rn(total, qscale[tok0 + t]));
      }
    }
  }
}

// ---- tiled: a workgroup takes TILE_M rows x TILE_N tokens, stepping over 256-blocks ----
// Shared: weights as trits, sh[m * KS + 4 * word + g] (m < TILE_M), then activations,
// sh[TILE_M * KS + n * KS + word] (n < TILE_N).

void tiled(uint row0, uint tok0) {
  uint tid = gl_LocalInvocationID.x;
  uint n_words = pc.n_in / 16;
  uint q_words = pc.n_in / 4;
  uint n_blocks = pc.n_in / 256;
  const uint TX = TILE_N / THREAD_N;  // threads along tokens
  uint tx = tid % TX;
  uint ty = tid / TX;
  // This thread's rows: ty + i * (TILE_M / THREAD_M); tokens: tx + j * TX.
  const uint RS = TILE_M / THREAD_M;

  int acc[THREAD_M * THREAD_N];
  precise float accf[THREAD_M * THREAD_N];
  for (uint v = 0; v < THREAD_M * THREAD_N; ++v) {
    acc[v] = 0;
    accf[v] = 0.0;
  }
  bool blocks = pc.d == 0.0;

  for (uint b = 0; b < n_blocks; ++b) {
    // Weights: TILE_M rows x 16 words, expanded to 4 packed trit words each.
    for (uint i = tid; i < TILE_M * 16; i += WG_SIZE) {
      uint m = i / 16, k = i % 16;
      uint word = row0 + m < pc.rows ? w[(row0 + m) * n_words + 16 * b + k] : 0x55555555u;
      for (int g = 0; g < 4; ++g) sh[m * KS + 4 * k + uint(g)] = trits4(word, g);
    }
    for (uint i = tid; i < TILE_N * KW; i += WG_SIZE) {
      uint n = i / KW, k = i % KW;
      sh[TILE_M * KS + n * KS + k] = tok0 + n < pc.n_tokens ? q[(tok0 + n) * q_words + KW * b + k] : 0u;
    }
    barrier();
    for (uint k = 0; k < KW; ++k) {
      uint qv[THREAD_N];
      for (uint j = 0; j < THREAD_N; ++j) qv[j] = sh[TILE_M * KS + (tx + j * TX) * KS + k];
      for (uint i = 0; i < THREAD_M; ++i) {
        uint tw = sh[(ty + i * RS) * KS + k];
        for (uint j = 0; j < THREAD_N; ++j) acc[i * THREAD_N + j] += dot4(tw, qv[j]);
      }
    }
    if (blocks) {
      for (uint i = 0; i < THREAD_M; ++i) {
        uint m = ty + i * RS;
        float db = row0 + m < pc.rows ? dblk[(row0 + m) * n_blocks + b] : 0.0;
        for (uint j = 0; j < THREAD_N; ++j) {
          precise float p = db * float(acc[i * THREAD_N + j]);
          accf[i * THREAD_N + j] = accf[i * THREAD_N + j] + p;
          acc[i * THREAD_N + j] = 0;
        }
      }
    }
    barrier();
  }

  for (uint i = 0; i < THREAD_M; ++i) {
    uint m = ty + i * RS;
    if (row0 + m >= pc.rows) continue;
    for (uint j = 0; j < THREAD_N; ++j) {
      uint n = tx + j * TX;
      if (tok0 + n >= pc.n_tokens) continue;
      float s = qscale[tok0 + n];
      float v;
      if (blocks) {
        v = div_rn(accf[i * THREAD_N + j], s);
      } else {
        precise float p = pc.d * float(acc[i * THREAD_N + j]);
        v = div_rn(p, s);
      }
      store(tok0 + n, row0 + m, v);
    }
  }
}

void main() {
  uint group = group_x_z();
  if (PATH == PATH_MATVEC) {
    uint row0 = group * MV_ROWS;
    uint tok0 = gl_WorkGroupID.y * MV_TOKENS;
    if (row0 >= pc.rows || tok0 >= pc.n_tokens) return;
    matvec(row0, tok0);
  } else {
    uint row0 = group * TILE_M;
    uint tok0 = gl_WorkGroupID.y * TILE_N;
    if (row0 >= pc.rows || tok0 >= pc.n_tokens) return;
    tiled(row0, tok0);
  }
}
