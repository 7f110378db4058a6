#pragma once
/// Plain C++ reference of every mqdist number format (namespace mqk). Pure functions over raw float
/// buffers: the caller (src/quant) converts bf16/fp16 to fp32 first and the result back, exactly as
/// ModelOpt computes in fp32 and casts to the input dtype. The CUDA kernels (mqk/cuda.hpp) must
/// reproduce these bit for bit.
///
/// Which arithmetic (policy): mqdist reproduces the ModelOpt code path that would run for the same
/// tensor. For a CUDA tensor that is ModelOpt's CUDA path; for a CPU tensor its CPU path where one exists
/// (INT and FP8 fake quant: the eager torch path; real quantization / packing: the QTensor code on CPU),
/// otherwise its CUDA path (NVFP4 dynamic and static, MX: GPU-only in ModelOpt, so mqdist computes them
/// on both devices as ModelOpt's Triton / CUDA-extension kernels do). Where ModelOpt's paths round
/// differently, the functions here take the path as an explicit mode (mqk/modes.hpp: ScalarDivMode,
/// Fp8ScaleMode, IntZeroAmaxMode) and src/quant selects it by the tensor's device; the CUDA launches
/// take the same modes. Two documented exceptions follow the intended arithmetic instead of ModelOpt:
/// IEEE division where Triton's approximate fp32 division rounds an exact E2M1 tie the other way, and
/// the configured NVFP4 block size where ModelOpt's Triton path ignores block 32 (tests/conformance
/// manifests name these cases in `expect` / `annotation`).
///
/// Signs of zero follow ModelOpt too: NVFP4 (Triton: `0 - q`) never gives -0; MX (CUDA extension) gives
/// -0 for a zero input; INT with a zero amax per IntZeroAmaxMode; NVFP4 dequantization gives +0 for the
/// negative-zero code (ModelOpt's E2M1 table holds +0 there).
///
/// Layout conventions:
///  - "flat" functions see n elements; a per-channel amax is addressed through AmaxLayout:
///      amax index of flat element i = (i / inner) % axis_len   (per-tensor: axis_len = 1)
///  - block functions see a (rows, cols) row-major matrix and blocks of `block` along cols; a last
///    partial block is treated as zero-padded (padding is never written).
#include <cstddef>
#include <cstdint>

#include "mqk/formats.hpp"
#include "mqk/modes.hpp"

namespace mqk {

struct AmaxLayout {
  int64_t axis_len = 1;
  int64_t inner = 1;
  // constexpr so that device code may call it (nvcc --expt-relaxed-constexpr).
  constexpr int64_t index(int64_t i) const { return (i / inner) % axis_len; }
};

// ---- scalar conversions (exposed for tests and for the CUDA kernels' host-side checks) ----
/// fp32 -> FP8 E4M3 (fn) value with round-to-nearest-even and saturation to +-448; NaN stays NaN.
float e4m3_round(float v);
/// |a| -> E2M1 magnitude with ModelOpt's thresholds (reference §2.5 step 5). a >= 0.
float e2m1_round_magnitude(float a);
/// E2M1 magnitude index 0..7 for |a| (same thresholds).
int e2m1_index(float a);
/// FP8 E4M3 byte of e4m3_round(v) (sign bit kept, so -0.0 and tiny negatives give 0x80; NaN gives 0x7f/0xff).
uint8_t e4m3_to_bits(float v);
/// Value of an FP8 E4M3 (fn) byte (0x7f/0xff are NaN).
float e4m3_from_bits(uint8_t b);
/// torch's `.to(float8_e4m3fn)` (RNE, no saturation: |v| > 464 and Inf give NaN), as a value.
float e4m3_round_torch(float v);
/// Magnitude a >= 0 onto an MX element grid with RNE and saturation (reference §2.6 step 5).
float mx_elem_round_magnitude(float a, ElemFormat elem);
/// ceil(log2(ratio)) of a positive finite fp32 from its bits (the E8M0 "NV algorithm", §2.6 step 3).
int e8m0_ceil_exponent(float ratio);
/// fp32 -> bf16 -> fp32 with round-to-nearest-even (NaN stays NaN).
float bf16_round(float v);
/// NF4 look-up table values as ModelOpt stores them (bf16 of kNf4Table).
float nf4_lut(int index);

// ---- fake quantization (quantize + dequantize) ----
/// INT-N (reference §2.2). A zero amax follows `zero` (IntZeroAmaxMode): ModelOpt's CUDA kernel
/// (amax < 2^-24 gives +0, the default) or its eager path (amax <= 2^-24 gives x * 0).
/// Unsigned with a negative input throws std::invalid_argument (ModelOpt raises TypeError).
void int_fake_quant_ref(const float* x, float* y, int64_t n, const float* amax, AmaxLayout layout,
                        int num_bits, bool is_unsigned, bool narrow_range,
                        IntZeroAmaxMode zero = IntZeroAmaxMode::kCudaKernel);

/// FP8 (Fp8ScaleMode: mqk/modes.hpp) E4M3 with a scaled range (reference §2.3). amax <= 2^-24 is replaced by 1.
void fp8_fake_quant_ref(const float* x, float* y, int64_t n, const float* amax, AmaxLayout layout,
                        Fp8ScaleMode mode = Fp8ScaleMode::kDivide);
/// NVFP4 dynamic block (reference §2.5, Triton semantics with IEEE division): per-block FP8 scales from
/// the block max and the fp32 global amax; gs = global_amax * fp32(1/2688) as torch on CUDA computes it
/// (detail::nvfp4_global_scale).
void nvfp4_fake_quant_ref(const float* x, float* y, int64_t rows, int64_t cols, int block,
                          float global_amax);
/// NVFP4 static block: per-block amax given ((rows * ceil(cols/block)) values), plus the global amax.
/// four_over_six uses 256 instead of 448 as the FP8 normalisation max; `/ 6` is `* fp32(1/6)` as torch on
/// CUDA computes it. As the Triton kernel (nvfp4_quant.py): a block scale that quantizes to 0 gives an
/// all +0 block, a NaN/Inf one is replaced by 1.0 (`scale_safe`).
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
/// Real-quant block sizes: NVFP4 / MX packers accept block in {8, 16, 32}, NF4 in {16, 32, 64, 128, 256}
/// (the packed block structs of formats.hpp are instantiated for these); others throw
/// std::invalid_argument. A last partial block is zero-padded: with odd cols the last byte's pad nibble
/// holds the format's encoding of 0 (NVFP4 0x0, MXFP4 0x8, NF4 index 7).
///
/// NVFP4: packed (rows, ceil(cols/2)) uint8, low nibble = even element; scales (rows, ceil(cols/block))
/// as FP8 E4M3 bytes; weight_scale_2 = global_amax / 2688 (returned). ModelOpt pads cols up to a
/// multiple of block before packing, so its packed tensor is (rows, ceil(cols/block)*block/2): pass an
/// explicitly zero-padded input to get that shape. Matches NVFP4QTensor.quantize bit for bit (golden
/// test), for fp32 inputs and for bf16 inputs given as their fp32 values. `div`: how the divisions by
/// the constants 2688 (and 6 in the static variant) are rounded: kDivide as ModelOpt's QTensor code on a
/// CPU tensor, kReciprocal as the same code on a CUDA tensor.
float nvfp4_quantize_ref(const float* x, int64_t rows, int64_t cols, int block, float global_amax,
                         uint8_t* packed, uint8_t* scales_e4m3,
                         ScalarDivMode div = ScalarDivMode::kDivide);
/// NVFP4 export of a static (per-block amax) weight (reference §6.4 step 1, static weights):
/// pbs = (block_amax/6, 0 -> 1) * m / (global_amax/6), weight_scale_2 = global_amax / (6 m) with
/// m = 448 (256 when four_over_six). Same layouts as nvfp4_quantize_ref; returns weight_scale_2.
float nvfp4_static_quantize_ref(const float* x, int64_t rows, int64_t cols, int block,
                                const float* block_amax, float global_amax, bool four_over_six,
                                uint8_t* packed, uint8_t* scales_e4m3,
                                ScalarDivMode div = ScalarDivMode::kDivide);
/// Code 0x8 (negative zero) dequantizes to +0, as ModelOpt's E2M1 table.
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
/// FP8 per-tensor/per-channel: byte = e4m3(x / scale) with scale = amax/448, no clamp, cast as torch
/// does (e4m3_round_torch: an out-of-range value becomes NaN 0x7f/0xff, as in ModelOpt's real quant).
/// `scale` is per AmaxLayout.
void fp8_quantize_ref(const float* x, int64_t n, const float* scale, AmaxLayout layout,
                      uint8_t* out_e4m3);
/// INT8: round(x/scale).clamp(-128,127), scale = amax/127.
void int8_quantize_ref(const float* x, int64_t n, const float* scale, AmaxLayout layout, int8_t* out);
/// INT4 AWQ export packing (reference §6.4): weight (out, in) with group `block` along in,
/// scale (out, ceil(in/block)) = amax/7; q = clamp(rint(w / scale), -8, 7); packed along the OUTPUT dim:
/// packed (out/2, in), byte[j][c] = (q[2j][c] & 0xF) | (q[2j+1][c] & 0xF) << 4. out must be even.
void int4_awq_pack_ref(const float* w, int64_t out_features, int64_t in_features, int block,
                       const float* scale, uint8_t* packed);
/// NF4 (reference §2.7): per-block scale = block amax (scales has ceil(n/block) entries); index =
/// first argmin |x/scale - nf4_lut(i)| in fp32; packed (ceil(n/2)) with element 2j in the HIGH nibble.
/// An all-zero block (scale 0) gives the index of 0.0 (7) instead of ModelOpt's 0/0 = NaN.
/// ModelOpt's CPU path divides in the input dtype: this equals it for fp32 input; for bf16/fp16 weights
/// (x / scale rounded to that dtype) the chosen index can differ near the midpoint of two LUT entries.
void nf4_quantize_ref(const float* x, int64_t n, int block, uint8_t* packed, float* scales);
void nf4_dequantize_ref(const uint8_t* packed, const float* scales, int64_t n, int block, float* y);

}  // namespace mqk
