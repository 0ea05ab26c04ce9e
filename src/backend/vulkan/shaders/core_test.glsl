// Shared by the core layer's test shaders: proves that includes resolve and trigger rebuilds.
#extension GL_GOOGLE_include_directive : require

float core_test_axpy(float a, float x, float y) { return a * x + y; }
