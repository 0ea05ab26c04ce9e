# Shaders of the Vulkan core layer's tests (tests/test_vulkan_core.cpp).
trit_shader(test_axpy test_axpy.comp)
trit_shader(test_axpy_bias test_axpy.comp BIAS=1)
