// Test hooks of the engine (tests only; not part of the HTTP contract).
#pragma once

#include <chrono>
#include <cstdint>

#include "serving/engine.h"

namespace chimera::serving::test_hooks {

// Makes the n-th next ubatch the engine decodes fail with a compute error (the engine thread
// applies it at the start of its next step).
void inject_decode_failure(Engine& engine, int64_t n);
// Makes every engine step sleep this long first, so a test can act while a request runs.
void set_step_delay(Engine& engine, std::chrono::microseconds delay);

}  // namespace chimera::serving::test_hooks
