// Small helpers shared by the forward-pass files (forward.cpp, forward_delta_net.cpp).
#pragma once

#include <vector>

#include "models/model.h"

namespace chimera::forward_internal {

inline const float* f32(Weight w) {
  return w ? reinterpret_cast<const float*>(w->data) : nullptr;
}

// Scratch grown to at least n floats (never shrunk).
inline float* grow(std::vector<float>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

}  // namespace chimera::forward_internal
