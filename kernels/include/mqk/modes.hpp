#pragma once
/// Arithmetic modes: where ModelOpt's code paths for one format round differently, the kernels take the
/// path as an explicit parameter and src/quant selects it by the tensor's device (policy in mqk/ref.hpp).
/// Usable from host and device code.

namespace mqk {

/// How `x / c` by a per-tensor constant is rounded. kDivide: one IEEE fp32 division (torch on CPU,
/// ModelOpt's CUDA extensions, C++). kReciprocal: x * fp32(1 / c), which is what torch on CUDA computes
/// for `tensor / python_scalar`, and what Python computes on any device for `c / tensor`
/// (Tensor.__rtruediv__ = tensor.reciprocal() * c). The two differ by one ulp for some x.
enum class ScalarDivMode : int { kDivide = 0, kReciprocal };

/// How the FP8 scale 448/amax is rounded: kDivide is ModelOpt's CUDA extension (fake_e4m3fy, scalar or
/// 1-D amax on GPU, and the static NVFP4 block-scale quantizer); kReciprocal is its eager torch path
/// (CPU, or a multi-dim amax), fp32(fp32(1/amax) * 448).
enum class Fp8ScaleMode : int { kDivide = 0, kReciprocal };

/// INT-N with a (near) zero amax. kCudaKernel: ModelOpt's CUDA kernel (fake_tensor_quant_device):
/// amax < 2^-24 gives +0. kEager: its torch path (_tensor_quant, on CPU and for a multi-dim amax on GPU):
/// amax <= 2^-24 zeroes the scale, so the element is x * 0, a zero with the sign of x (NaN and Inf give
/// NaN).
enum class IntZeroAmaxMode : int { kCudaKernel = 0, kEager };

}  // namespace mqk
