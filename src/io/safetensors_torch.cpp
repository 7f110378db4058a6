#include "mq/io/safetensors_torch.hpp"

#include <cstring>
#include <vector>

#include <ATen/ATen.h>

#include "mq/core/error.hpp"

namespace mq::io {

Dtype to_safetensors_dtype(c10::ScalarType t) {
  switch (t) {
    case c10::ScalarType::Bool: return Dtype::kBool;
    case c10::ScalarType::Byte: return Dtype::kU8;
    case c10::ScalarType::Char: return Dtype::kI8;
    case c10::ScalarType::Short: return Dtype::kI16;
    case c10::ScalarType::UInt16: return Dtype::kU16;
    case c10::ScalarType::Int: return Dtype::kI32;
    case c10::ScalarType::UInt32: return Dtype::kU32;
    case c10::ScalarType::Long: return Dtype::kI64;
    case c10::ScalarType::UInt64: return Dtype::kU64;
    case c10::ScalarType::Half: return Dtype::kF16;
    case c10::ScalarType::BFloat16: return Dtype::kBF16;
    case c10::ScalarType::Float: return Dtype::kF32;
    case c10::ScalarType::Double: return Dtype::kF64;
    case c10::ScalarType::Float8_e4m3fn: return Dtype::kF8E4M3;
    case c10::ScalarType::Float8_e5m2: return Dtype::kF8E5M2;
    default: break;
  }
  MQ_THROW(IoError, "safetensors: no safetensors dtype for ", c10::toString(t));
}

c10::ScalarType to_scalar_type(Dtype d) {
  switch (d) {
    case Dtype::kBool: return c10::ScalarType::Bool;
    case Dtype::kU8: return c10::ScalarType::Byte;
    case Dtype::kI8: return c10::ScalarType::Char;
    case Dtype::kI16: return c10::ScalarType::Short;
    case Dtype::kU16: return c10::ScalarType::UInt16;
    case Dtype::kI32: return c10::ScalarType::Int;
    case Dtype::kU32: return c10::ScalarType::UInt32;
    case Dtype::kI64: return c10::ScalarType::Long;
    case Dtype::kU64: return c10::ScalarType::UInt64;
    case Dtype::kF16: return c10::ScalarType::Half;
    case Dtype::kBF16: return c10::ScalarType::BFloat16;
    case Dtype::kF32: return c10::ScalarType::Float;
    case Dtype::kF64: return c10::ScalarType::Double;
    case Dtype::kF8E4M3: return c10::ScalarType::Float8_e4m3fn;
    case Dtype::kF8E5M2: return c10::ScalarType::Float8_e5m2;
  }
  MQ_ASSERT(false);
  return c10::ScalarType::Undefined;
}

at::Tensor read_tensor(const SafetensorsFile& file, const TensorInfo& info) {
  at::Tensor t = at::empty(info.shape, at::TensorOptions().dtype(to_scalar_type(info.dtype)));
  auto bytes = file.data(info);
  MQ_ASSERT(static_cast<std::size_t>(t.nbytes()) == bytes.size());
  if (!bytes.empty()) std::memcpy(t.data_ptr(), bytes.data(), bytes.size());
  return t;
}

std::map<std::string, at::Tensor> load_safetensors(const std::string& path,
                                                   std::map<std::string, std::string>* metadata) {
  auto file = SafetensorsFile::open(path);
  std::map<std::string, at::Tensor> out;
  for (const auto& info : file.tensors()) out.emplace(info.name, read_tensor(file, info));
  if (metadata != nullptr) *metadata = file.metadata();
  return out;
}

at::Tensor load_safetensor(const std::string& path, const std::string& name) {
  auto file = SafetensorsFile::open(path);
  return read_tensor(file, file.at(name));
}

void save_safetensors(const std::string& path, const std::map<std::string, at::Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  // Keep the CPU copies alive while their bytes are referenced.
  std::vector<at::Tensor> cpu;
  std::vector<TensorRef> refs;
  cpu.reserve(tensors.size());
  refs.reserve(tensors.size());
  for (const auto& [name, t] : tensors) {
    MQ_CHECK_T(IoError, t.defined(), path, ": tensor '", name, "' is undefined");
    Dtype d;
    try {
      d = to_safetensors_dtype(t.scalar_type());
    } catch (const IoError& e) {
      MQ_THROW(IoError, path, ": tensor '", name, "': ", e.what());
    }
    cpu.push_back(t.to(at::kCPU).contiguous());
    const at::Tensor& c = cpu.back();
    refs.push_back(TensorRef{
        name, d, std::vector<int64_t>(c.sizes().begin(), c.sizes().end()),
        {static_cast<const std::byte*>(c.data_ptr()), static_cast<std::size_t>(c.nbytes())}});
  }
  write_safetensors(path, refs, metadata);
}

}  // namespace mq::io
