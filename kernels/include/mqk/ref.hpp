#pragma once
/// Plain C++ reference of every mqdist number format (namespace mqk). Pure functions over raw float
/// buffers: the caller (src/quant) converts bf16/fp16 to fp32 first and the result back, exactly as
/// ModelOpt computes in fp32 and casts to the input dtype. The CUDA kernels (mqk/cuda.hpp) must
/// reproduce these bit for bit.
///
/// Layout conventions:
///  - "flat" functions see n elements; a per-channel amax is addressed through AmaxLayout:
///      amax index of flat element i = (i / inner) % axis_len   (per-tensor: axis_len = 1)
///  - block functions see a (rows, cols) row-major matrix and blocks of `block` along cols; a last
///    partial block is treated as zero-padded (padding is never written).
#include <cstddef>
#include <cstdint>

namespace mqk {

struct AmaxLayout {
  int64_t axis_len = 1;
  int64_t inner = 1;
  int64_t index(int64_t i) const { return (i / inner) % axis_len; }
};

/// MX element formats (reference §2.6) plus NVFP4's E2M1 shares kE2M1.
enum class ElemFormat : int { kE4M3 = 0, kE5M2, kE3M2, kE2M3, kE2M1, kInt8 };

// ---- scalar conversions (exposed for tests and for the CUDA kernels' host-side checks) ----
/// fp32 -> FP8 E4M3 (fn) value with round-to-nearest-even and saturation to +-448; NaN stays NaN.
float e4m3_round(float v);
/// |a| -> E2M1 magnitude with ModelOpt's thresholds (reference §2.5 step 5). a >= 0.
float e2m1_round_magnitude(float a);
/// E2M1 magnitude index 0..7 for |a| (same thresholds).
int e2m1_index(float a);

// ---- fake quantization (quantize + dequantize) ----
/// INT-N (reference §2.2). amax <= 2^-24 gives 0 for those elements.
void int_fake_quant_ref(const float* x, float* y, int64_t n, const float* amax, AmaxLayout layout,
                        int num_bits, bool is_unsigned, bool narrow_range);
/// FP8 E4M3 with a scaled range (reference §2.3). amax <= 2^-24 is replaced by 1.
void fp8_fake_quant_ref(const float* x, float* y, int64_t n, const float* amax, AmaxLayout layout);
/// NVFP4 dynamic block (reference §2.5, Triton semantics with IEEE division): per-block FP8 scales from
/// the block max and the fp32 global amax.
void nvfp4_fake_quant_ref(const float* x, float* y, int64_t rows, int64_t cols, int block,
                          float global_amax);
/// NVFP4 static block: per-block amax given ((rows * ceil(cols/block)) values), plus the global amax.
/// four_over_six uses 256 instead of 448 as the FP8 normalisation max.
void nvfp4_static_fake_quant_ref(const float* x, float* y, int64_t rows, int64_t cols, int block,
                                 const float* block_amax, float global_amax, bool four_over_six);
/// MX (E8M0 shared scale per block along cols; reference §2.6).
void mx_fake_quant_ref(const float* x, float* y, int64_t rows, int64_t cols, int block,
                       ElemFormat elem);

// ---- amax ----
/// max(|x|) over everything (NaN propagates).
float amax_ref(const float* x, int64_t n);
/// Per-row max(|x|) of a (rows, cols) matrix.
void amax_rows_ref(const float* x, int64_t rows, int64_t cols, float* out);

// ---- real quantization / packing (reference §2.9 and §6.4) ----
/// NVFP4: packed (rows, ceil(cols/2)) uint8, low nibble = even element; scales (rows, ceil(cols/block))
/// as FP8 E4M3 bytes; weight_scale_2 = global_amax / 2688 (returned).
float nvfp4_quantize_ref(const float* x, int64_t rows, int64_t cols, int block, float global_amax,
                         uint8_t* packed, uint8_t* scales_e4m3);
void nvfp4_dequantize_ref(const uint8_t* packed, const uint8_t* scales_e4m3, float scale_2,
                          int64_t rows, int64_t cols, int block, float* y);
/// MXFP4 real quant (ties round DOWN, zero encodes as 0b1000; reference §2.6): packed (rows, cols/2),
/// E8M0 scales (rows, cols/block).
void mxfp4_quantize_ref(const float* x, int64_t rows, int64_t cols, int block, uint8_t* packed,
                        uint8_t* scales_e8m0);
void mxfp4_dequantize_ref(const uint8_t* packed, const uint8_t* scales_e8m0, int64_t rows,
                          int64_t cols, int block, float* y);
/// MXFP8: e4m3 bytes (rows, cols) and E8M0 scales (rows, cols/block).
void mxfp8_quantize_ref(const float* x, int64_t rows, int64_t cols, int block, uint8_t* data_e4m3,
                        uint8_t* scales_e8m0);
void mxfp8_dequantize_ref(const uint8_t* data_e4m3, const uint8_t* scales_e8m0, int64_t rows,
                          int64_t cols, int block, float* y);
/// FP8 per-tensor/per-channel: byte = e4m3(x / scale) with scale = amax/448 (no clamp before the
/// saturating cast, as ModelOpt's real quant). Returns nothing; `scale` is per AmaxLayout.
void fp8_quantize_ref(const float* x, int64_t n, const float* scale, AmaxLayout layout,
                      uint8_t* out_e4m3);
/// INT8: round(x/scale).clamp(-128,127), scale = amax/127.
void int8_quantize_ref(const float* x, int64_t n, const float* scale, AmaxLayout layout, int8_t* out);
/// INT4 AWQ export packing (reference §6.4): weight (out, in) with group `block` along in,
/// scale (out, in/block) = amax/7; packed along the OUTPUT dim: (out/2 rows... see §6.4).
void int4_awq_pack_ref(const float* w, int64_t out_features, int64_t in_features, int block,
                       const float* scale, uint8_t* packed);
/// NF4 (reference §2.7): indices packed first-element-high-nibble; per-block scale = block amax.
void nf4_quantize_ref(const float* x, int64_t n, int block, uint8_t* packed, float* scales);
void nf4_dequantize_ref(const uint8_t* packed, const float* scales, int64_t n, int block, float* y);

}  // namespace mqk
