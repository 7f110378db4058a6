#pragma once
/// Number formats as data (ggml `type_traits` style): the element grids of the MX / NVFP4 formats, the
/// storage formats with their block size, scale format, element max and bit width, and the packed
/// block structs of the real-quantized formats. Code looks formats up here instead of branching on
/// names. Usable from host and device code (the tables are constexpr; device code reads them only in
/// constant expressions, e.g. `constexpr ElemTraits t = elem_traits(F);` inside a template).
#include <cstdint>
#include <string_view>

namespace mqk {

/// MX element formats (reference §2.6); NVFP4's element format is kE2M1.
enum class ElemFormat : int { kE4M3 = 0, kE5M2, kE3M2, kE2M3, kE2M1, kInt8 };

/// An element grid: sign-magnitude minifloat (bias = 1 - emin) or a symmetric integer.
///   max         largest finite magnitude (saturation target)
///   mbits, emin mantissa bits and the exponent of the smallest normal binade (subnormal step 2^(emin-mbits))
///   nan_to_max  NaN input gives max (table formats, reference §2.6) instead of NaN (CUDA satfinite casts)
struct ElemTraits {
  ElemFormat format;
  const char* name;
  int bits;
  int mbits;
  int emin;
  float max;
  bool integer;
  bool nan_to_max;
};

inline constexpr ElemTraits kElemTraits[] = {
    {ElemFormat::kE4M3, "e4m3", 8, 3, -6, 448.0f, false, false},
    {ElemFormat::kE5M2, "e5m2", 8, 2, -14, 57344.0f, false, false},
    {ElemFormat::kE3M2, "e3m2", 6, 2, -2, 28.0f, false, true},
    {ElemFormat::kE2M3, "e2m3", 6, 3, 0, 7.5f, false, true},
    {ElemFormat::kE2M1, "e2m1", 4, 1, 0, 6.0f, false, true},
    {ElemFormat::kInt8, "int8", 8, 0, 0, 127.0f, true, true},
};
static_assert(sizeof(kElemTraits) / sizeof(kElemTraits[0]) == 6);

constexpr ElemTraits elem_traits(ElemFormat f) { return kElemTraits[static_cast<int>(f)]; }

/// How a block (or tensor) scale is stored.
enum class ScaleFormat : int { kFp32 = 0, kE4M3, kE8M0 };

/// Storage formats (what a quantized tensor is exported / compressed as).
enum class Format : int { kInt8 = 0, kInt4, kFp8, kNvfp4, kMxfp4, kMxfp6E3M2, kMxfp6E2M3, kMxfp8, kMxint8, kNf4 };

/// {name, block (0: per-tensor/channel), scale format, element max, bits per element}.
/// NVFP4 additionally carries an fp32 per-tensor scale (weight_scale_2 = global_amax / 2688).
struct FormatTraits {
  Format format;
  const char* name;
  int block;
  ScaleFormat scale;
  float elem_max;
  int bits;
};

inline constexpr FormatTraits kFormatTraits[] = {
    {Format::kInt8, "int8", 0, ScaleFormat::kFp32, 127.0f, 8},
    {Format::kInt4, "int4", 128, ScaleFormat::kFp32, 7.0f, 4},
    {Format::kFp8, "fp8", 0, ScaleFormat::kFp32, 448.0f, 8},
    {Format::kNvfp4, "nvfp4", 16, ScaleFormat::kE4M3, 6.0f, 4},
    {Format::kMxfp4, "mxfp4", 32, ScaleFormat::kE8M0, 6.0f, 4},
    {Format::kMxfp6E3M2, "mxfp6_e3m2", 32, ScaleFormat::kE8M0, 28.0f, 6},
    {Format::kMxfp6E2M3, "mxfp6_e2m3", 32, ScaleFormat::kE8M0, 7.5f, 6},
    {Format::kMxfp8, "mxfp8", 32, ScaleFormat::kE8M0, 448.0f, 8},
    {Format::kMxint8, "mxint8", 32, ScaleFormat::kE8M0, 127.0f, 8},
    {Format::kNf4, "nf4", 64, ScaleFormat::kFp32, 1.0f, 4},
};
static_assert(sizeof(kFormatTraits) / sizeof(kFormatTraits[0]) == 10);

constexpr const FormatTraits& format_traits(Format f) { return kFormatTraits[static_cast<int>(f)]; }

/// The traits whose name equals `name`, or nullptr.
constexpr const FormatTraits* find_format(std::string_view name) {
  for (const auto& t : kFormatTraits)
    if (name == t.name) return &t;
  return nullptr;
}

// ---- constants (reference §0) ----
inline constexpr float kE4M3Max = 448.0f;
inline constexpr float kE4M3Max46 = 256.0f;  // four_over_six normalisation max
inline constexpr float kE2M1Max = 6.0f;
inline constexpr float kNvfp4GlobalDivisor = 2688.0f;  // 6 * 448
inline constexpr int kE8M0Bias = 127;
/// E2M1 magnitudes by 3-bit index.
inline constexpr float kE2M1Values[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
/// NF4 look-up table as written in ModelOpt (it is stored as bf16; nf4_lut() gives the bf16 values).
inline constexpr float kNf4Table[16] = {-1.0f,   -0.6962f, -0.5251f, -0.3949f, -0.2844f, -0.1848f,
                                        -0.0911f, 0.0f,    0.0796f,  0.1609f,  0.2461f,  0.3379f,
                                        0.4407f,  0.5626f, 0.7230f,  1.0f};

// ---- packed blocks (one quantization block, as stored) ----
/// NVFP4: E4M3 block scale + kBlock E2M1 nibbles, element 2j in the low nibble of byte j.
template <int kBlock>
struct Nvfp4Block {
  uint8_t scale_e4m3;
  uint8_t qs[kBlock / 2];
};
/// MXFP4: E8M0 block exponent + kBlock E2M1 nibbles, element 2j in the low nibble.
template <int kBlock>
struct Mxfp4Block {
  uint8_t scale_e8m0;
  uint8_t qs[kBlock / 2];
};
/// MXFP8: E8M0 block exponent + kBlock E4M3 bytes.
template <int kBlock>
struct Mxfp8Block {
  uint8_t scale_e8m0;
  uint8_t qs[kBlock];
};
/// NF4: fp32 block absmax + kBlock 4-bit LUT indices, element 2j in the HIGH nibble.
template <int kBlock>
struct Nf4Block {
  float scale;
  uint8_t qs[kBlock / 2];
};
static_assert(sizeof(Nvfp4Block<16>) == 9);
static_assert(sizeof(Nvfp4Block<32>) == 17);
static_assert(sizeof(Mxfp4Block<32>) == 17);
static_assert(sizeof(Mxfp8Block<32>) == 33);
static_assert(sizeof(Nf4Block<64>) == 36);

}  // namespace mqk
