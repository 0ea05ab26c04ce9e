// The parity tests hold Vulkan training to the CPU's bits, so this test program runs the exact
// path (TRIT_VK_EXACT=1, DESIGN section 2) unless its caller set the variable: on a device with
// f16 cooperative matrices training would otherwise take the fast path. The fast path's own
// tests set TRIT_VK_EXACT=0 for the backends and runs they make.
#include <cstdlib>

namespace {

const int exact_training_by_default = setenv("TRIT_VK_EXACT", "1", 0);

}  // namespace
