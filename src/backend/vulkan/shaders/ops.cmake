# The compute shaders of the Vulkan backend's forward pass. Each line declares one SPIR-V
# module: trit_shader(NAME SOURCE [DEFINES...]). The backend's CMake compiles every module with
#   glslc --target-env=vulkan1.1 -O -I<this folder> <DEFINES> SOURCE
# validates it with spirv-val and embeds it. Plain modules need only 32-bit storage buffers;
# a *_dot module needs shaderIntegerDotProduct (VK_KHR_shader_integer_dot_product or 1.3).
# Everything else (workgroup size, matvec or tiled path, tile sizes, weight type, activation,
# attention chunk) is a specialization constant: see push_constants.h.

trit_shader(quantize_acts quantize_acts.comp)
trit_shader(matmul_ternary matmul_ternary.comp)
trit_shader(matmul_ternary_dot matmul_ternary.comp -DINT_DOT=1)
# The tiled int8 product on cooperative matrices (needs VK_NV_cooperative_matrix with int8
# shapes, shaderInt8 and vulkanMemoryModel; see Context).
trit_shader(matmul_ternary_coop matmul_ternary_coop.comp)
trit_shader(matmul_ternary_f32 matmul_ternary_f32.comp)
trit_shader(matmul_float matmul_float.comp)
trit_shader(embedding embedding.comp)
trit_shader(rms_norm rms_norm.comp)
trit_shader(rms_norm_quant rms_norm.comp -DQUANT=1)
trit_shader(rope rope.comp)
trit_shader(attention attention.comp)
trit_shader(attention_combine attention_combine.comp)
trit_shader(gated_act gated_act.comp)
trit_shader(add add.comp)
# TQ1_0 kept in place on the device: its T2 codes for the products that read those.
trit_shader(tq1_codes tq1_codes.comp)
# TQ2_0 uploaded as its qs bytes: converted to T2 codes on the device.
trit_shader(tq2_codes tq2_codes.comp)

# Decoding (one token; norm_linear in linear.cpp): a matvec over several weights with subgroup sums
# (needs subgroup arithmetic), rope with the KV store.
trit_shader(matvec_ternary matvec_ternary.comp)
trit_shader(matvec_ternary_dot matvec_ternary.comp -DINT_DOT=1)
trit_shader(matvec_norm_ternary matvec_ternary.comp -DNORM=1)
trit_shader(matvec_norm_ternary_dot matvec_ternary.comp -DNORM=1 -DINT_DOT=1)
trit_shader(matvec_ternary_tq1 matvec_ternary.comp -DTQ1=1)
trit_shader(matvec_ternary_tq1_dot matvec_ternary.comp -DTQ1=1 -DINT_DOT=1)
trit_shader(matvec_norm_ternary_tq1 matvec_ternary.comp -DTQ1=1 -DNORM=1)
trit_shader(matvec_norm_ternary_tq1_dot matvec_ternary.comp -DTQ1=1 -DNORM=1 -DINT_DOT=1)
trit_shader(rope_kv rope_kv.comp)
trit_shader(store_kv_f16 store_kv_f16.comp)

# Training (the backward pass and the loss; the family files).
trit_shader(gemm_f32 gemm_f32.comp)
trit_shader(gemm_f32_short_k gemm_f32_short_k.comp)
trit_shader(matmul_ternary_t matmul_transposed.comp TERNARY=1)
trit_shader(matmul_float_t matmul_transposed.comp)
# Their fast paths (ternary and f16 weights) on f16 cooperative matrices (need
# VK_NV_cooperative_matrix with f16 shapes, shaderFloat16 and vulkanMemoryModel; TRIT_VK_EXACT=1
# keeps the ones above), and the halves of dy they read.
trit_shader(matmul_ternary_t_coop matmul_transposed_coop.comp)
trit_shader(matmul_float_t_coop matmul_transposed_coop.comp FLOAT_F16=1)
trit_shader(dy_to_f16 dy_to_f16.comp)
trit_shader(transposed_reduce transposed_reduce.comp)
trit_shader(rms_norm_backward rms_norm_backward.comp)
trit_shader(gated_act_backward gated_act_backward.comp)
trit_shader(dropout dropout.comp)
trit_shader(cross_entropy cross_entropy.comp)
trit_shader(attention_backward_wg attention_backward_wg.comp)
trit_shader(attention_backward_kv_wg attention_backward_kv_wg.comp)
trit_shader(attention_backward_tiled attention_backward_tiled.comp)
trit_shader(attention_backward_kv_tiled attention_backward_kv_tiled.comp)

# Optimizer (optimizer.cpp).
trit_shader(adamw adamw.comp)
trit_shader(sum_squares sum_squares.comp)
