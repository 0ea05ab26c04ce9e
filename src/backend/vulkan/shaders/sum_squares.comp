#version 450
// sum_squares: the sum of x[r][j]^2 over each row r of a (rows, cols) matrix, one workgroup per
// row, in a fixed order per row (strided partial sums, then a tree), so a row's result does not
// depend on how the matrix is tiled. The host adds the rows' sums in double.
//
// Bindings (set 0):
//   0 x    float[rows * cols]  (read)
//   1 sums float[rows]         (write)
// Push constants: SumSquaresPush { rows, cols }.
// Spec constants: 0 workgroup size.
// Dispatch: `rows` groups split over x and z: x = min(rows, 65535), z = ceil(rows / x).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = SPEC_WG_SIZE) in;
layout(constant_id = SPEC_WG_SIZE) const uint WG_SIZE = 64;

layout(std430, set = 0, binding = 0) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Out { float sums[]; };

layout(push_constant) uniform Push {
  uint rows;
  uint cols;
} pc;

shared float part[WG_SIZE];

void main() {
  const uint row = group_x_z();
  if (row >= pc.rows) return;
  const uint lid = gl_LocalInvocationID.x;
  float s = 0.0;
  for (uint j = lid; j < pc.cols; j += WG_SIZE) {
    const float v = x[row * pc.cols + j];
    s += v * v;
  }
  part[lid] = s;
  barrier();
  for (uint w = WG_SIZE / 2; w > 0; w >>= 1) {
    if (lid < w) part[lid] += part[lid + w];
    barrier();
  }
  if (lid == 0) sums[row] = part[0];
}
