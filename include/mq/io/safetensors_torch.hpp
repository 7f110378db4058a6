#pragma once
/// at::Tensor adapter over the torch-free safetensors core (mq/io/safetensors.hpp).
///
/// Loading copies each tensor out of the mapping into an owned, contiguous CPU tensor (the file can
/// be closed afterwards; no alignment assumptions). Saving accepts any CPU or device tensor: it is
/// made contiguous on the CPU first.
///
/// dtype mapping: BOOL<->kBool, U8<->kByte, I8<->kChar, I16<->kShort, U16<->kUInt16, I32<->kInt,
/// U32<->kUInt32, I64<->kLong, U64<->kUInt64, F16<->kHalf, BF16<->kBFloat16, F32<->kFloat,
/// F64<->kDouble, F8_E4M3<->kFloat8_e4m3fn, F8_E5M2<->kFloat8_e5m2.
///
/// Example:
///   auto tensors = mq::io::load_safetensors("in.safetensors");     // name -> tensor
///   tensors["w._amax"] = amax;
///   mq::io::save_safetensors("out.safetensors", tensors, {{"format", "pt"}});
#include <map>
#include <string>

#include <ATen/core/Tensor.h>

#include "mq/io/safetensors.hpp"

namespace mq::io {

/// Throws mq::IoError for an ATen dtype with no safetensors equivalent (complex, quantized, ...).
Dtype to_safetensors_dtype(c10::ScalarType t);
c10::ScalarType to_scalar_type(Dtype d);

/// A copy of one tensor of an opened file.
at::Tensor read_tensor(const SafetensorsFile& file, const TensorInfo& info);

/// All tensors of `path` (name -> tensor). `metadata`, when given, receives "__metadata__".
std::map<std::string, at::Tensor> load_safetensors(
    const std::string& path, std::map<std::string, std::string>* metadata = nullptr);

/// One tensor by name; throws mq::IoError "<path>: no tensor '<name>'" when absent.
at::Tensor load_safetensor(const std::string& path, const std::string& name);

/// Writes the map atomically, in the Python writer's byte layout (see safetensors.hpp).
void save_safetensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace mq::io
