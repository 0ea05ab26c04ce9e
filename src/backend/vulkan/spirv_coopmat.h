// Rewrites a SPIR-V module written against SPV_NV_cooperative_matrix into the ratified
// SPV_KHR_cooperative_matrix (the form AMD and Intel drivers take, and NVIDIA's too). The
// glslang of Debian 12 compiles GL_NV_cooperative_matrix only, so matmul_ternary_coop is
// written once, in the NV dialect, and its KHR module is derived at run time.
//
// The two differ in five instructions:
//   type    NV: Rows Columns                  KHR: Rows Columns Use (A, B or accumulator)
//   load    NV: Pointer Stride ColumnMajor    KHR: Pointer Layout Stride
//   store   NV: Pointer Object Stride ColMaj  KHR: Pointer Object Layout Stride
//   muladd  NV: A B C                         KHR: A B C Operands (signedness of integers)
//   length  same operands, another opcode
// plus the capability and extension names. A matrix type's Use comes from the multiplies that
// take it (A, B, or C and the result); the layout from the boolean constant ColumnMajor named.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace trit::engine::vk {

// The KHR form of `nv`. Throws trit::Error when the module is not SPIR-V, uses a matrix type in
// two roles, takes ColumnMajor from anything but a boolean constant, or has no 32-bit integer
// type for the new constants.
std::vector<uint32_t> coopmat_nv_to_khr(std::span<const uint32_t> nv);

// SPIR-V numbers of both extensions (tests read modules with them).
namespace spirv {
inline constexpr uint32_t kCapabilityCooperativeMatrixNV = 5357;
inline constexpr uint32_t kCapabilityCooperativeMatrixKHR = 6022;
inline constexpr uint32_t kOpTypeCooperativeMatrixNV = 5358;
inline constexpr uint32_t kOpCooperativeMatrixLoadNV = 5359;
inline constexpr uint32_t kOpCooperativeMatrixStoreNV = 5360;
inline constexpr uint32_t kOpCooperativeMatrixMulAddNV = 5361;
inline constexpr uint32_t kOpCooperativeMatrixLengthNV = 5362;
inline constexpr uint32_t kOpTypeCooperativeMatrixKHR = 4456;
inline constexpr uint32_t kOpCooperativeMatrixLoadKHR = 4457;
inline constexpr uint32_t kOpCooperativeMatrixStoreKHR = 4458;
inline constexpr uint32_t kOpCooperativeMatrixMulAddKHR = 4459;
inline constexpr uint32_t kOpCooperativeMatrixLengthKHR = 4460;
// MatrixUse and CooperativeMatrixLayout values, CooperativeMatrixOperands bits.
inline constexpr uint32_t kUseA = 0, kUseB = 1, kUseAccumulator = 2;
inline constexpr uint32_t kRowMajor = 0, kColumnMajor = 1;
inline constexpr uint32_t kSignedA = 0x1, kSignedB = 0x2, kSignedC = 0x4, kSignedResult = 0x8;
}  // namespace spirv

}  // namespace trit::engine::vk
