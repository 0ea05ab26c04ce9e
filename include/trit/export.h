// Marks what the shared library exports: the public API, and nothing of the engine inside.
#pragma once

#if defined(_WIN32)
#define TRIT_API __declspec(dllexport)
#else
#define TRIT_API __attribute__((visibility("default")))
#endif
