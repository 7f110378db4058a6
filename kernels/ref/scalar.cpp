// Scalar conversions of mqk/ref.hpp: thin wrappers over the shared host/device numerics.
#include <stdexcept>

#include "mqk/detail/numerics.hpp"
#include "mqk/ref.hpp"

namespace mqk {

float e4m3_round(float v) { return detail::e4m3_round_sat(v); }

float e2m1_round_magnitude(float a) { return detail::e2m1_round_value(a); }

int e2m1_index(float a) { return detail::e2m1_index_of(a); }

uint8_t e4m3_to_bits(float v) { return detail::e4m3_bits_of_value(detail::e4m3_round_sat(v)); }

float e4m3_from_bits(uint8_t b) { return detail::e4m3_value_of_bits(b); }

float e4m3_round_torch(float v) { return detail::e4m3_round_torch(v); }

float mx_elem_round_magnitude(float a, ElemFormat elem) {
  return detail::elem_round_magnitude(a, detail::grid_of(elem_traits(elem)));
}

int e8m0_ceil_exponent(float ratio) { return detail::e8m0_ceil_exponent(ratio); }

float bf16_round(float v) {
  if (detail::is_nan(v)) return v;
  const uint32_t u = detail::bits_of(v);
  const uint32_t rounded = u + 0x7fffu + ((u >> 16) & 1u);
  return detail::float_of(rounded & 0xffff0000u);
}

float nf4_lut(int index) {
  if (index < 0 || index > 15) throw std::invalid_argument("nf4_lut: index out of [0, 15]");
  return bf16_round(kNf4Table[index]);
}

}  // namespace mqk
