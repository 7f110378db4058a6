#pragma once
// Helpers shared by the reference-kernel tests.
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

namespace mqk::testing {

using Vec = std::vector<float>;

/// The IEEE bits of f (bit-for-bit comparisons: -0 vs +0, NaN payloads).
inline uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

/// n samples of N(0, scale^2) from mt19937(seed).
inline Vec random_vec(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  Vec v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

}  // namespace mqk::testing
