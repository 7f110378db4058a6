#include "mq/models/checkpoint.hpp"

#include <ATen/ATen.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "models/json_file_impl.hpp"
#include "mq/core/error.hpp"
#include "mq/io/safetensors_torch.hpp"

namespace mq::models {

namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

}  // namespace

Checkpoint Checkpoint::open(const std::string& dir) {
  namespace fs = std::filesystem;
  Checkpoint ck;
  ck.dir_ = dir;
  const std::string index = dir + "/model.safetensors.index.json";
  const std::string single = dir + "/model.safetensors";
  if (fs::exists(index)) {
    const nlohmann::json j = detail::read_json_file<IoError>(index);
    MQ_CHECK_T(IoError, j.is_object() && j.contains("weight_map") && j.at("weight_map").is_object(),
               index, ": weight_map: missing or not an object");
    std::map<std::string, size_t> file_index;
    for (const auto& [name, file] : j.at("weight_map").items()) {
      MQ_CHECK_T(IoError, file.is_string(), index, ": weight_map: tensor '", name,
                 "': file must be a string");
      const std::string f = file.get<std::string>();
      MQ_CHECK_T(IoError, f.find('/') == std::string::npos && f != ".." && !f.empty(), index,
                 ": weight_map: tensor '", name, "': '", f,
                 "' is not a file name in the checkpoint directory");
      auto it = file_index.find(f);
      if (it == file_index.end()) {
        const std::string path = dir + "/" + f;
        MQ_CHECK_T(IoError, fs::exists(path), index, ": weight_map: tensor '", name, "' -> '", f,
                   "': file does not exist");
        ck.files_.push_back(std::make_unique<io::SafetensorsFile>(io::SafetensorsFile::open(path)));
        it = file_index.emplace(f, ck.files_.size() - 1).first;
      }
      const io::TensorInfo* info = ck.files_[it->second]->find(name);
      MQ_CHECK_T(IoError, info != nullptr, index, ": weight_map: tensor '", name, "' is not in ",
                 f);
      ck.where_.emplace(name, std::make_pair(it->second, info));
    }
    for (const auto& file : ck.files_)
      for (const auto& t : file->tensors())
        MQ_CHECK_T(IoError, ck.where_.count(t.name) != 0, file->path(), ": tensor '", t.name,
                   "' is not listed in ", index);
  } else {
    MQ_CHECK_T(IoError, fs::exists(single), dir,
               ": no model.safetensors or model.safetensors.index.json");
    ck.files_.push_back(std::make_unique<io::SafetensorsFile>(io::SafetensorsFile::open(single)));
    for (const auto& t : ck.files_[0]->tensors())
      ck.where_.emplace(t.name, std::make_pair(size_t{0}, &t));
  }
  return ck;
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  out.reserve(where_.size());
  for (const auto& [n, w] : where_) out.push_back(n);
  return out;
}

const io::TensorInfo& Checkpoint::info(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) {
    std::set<std::string> sorted;
    for (const auto& f : files_)
      sorted.insert(std::filesystem::path(f->path()).filename().string());
    std::string files;
    for (const auto& f : sorted) files += (files.empty() ? "" : ", ") + f;
    MQ_THROW(IoError, dir_, ": no tensor '", name, "' (looked in ", files, ")");
  }
  return *it->second.second;
}

const std::string& Checkpoint::file_of(const std::string& name) const {
  info(name);
  return files_[where_.at(name).first]->path();
}

c10::ScalarType Checkpoint::dtype_of(const std::string& name) const {
  return io::to_scalar_type(info(name).dtype);
}

at::Tensor Checkpoint::load(const std::string& name, std::optional<c10::ScalarType> dtype,
                            c10::Device device) const {
  const io::TensorInfo& ti = info(name);
  if (ti.shape.empty()) {
    at::Tensor t = io::read_tensor(*files_[where_.at(name).first], ti);
    return t.to(device, dtype.value_or(t.scalar_type()));
  }
  return load_slice(name, 0, 0, ti.shape[0], dtype, device);
}

at::Tensor Checkpoint::load_slice(const std::string& name, int64_t dim, int64_t begin, int64_t end,
                                  std::optional<c10::ScalarType> dtype, c10::Device device) const {
  const io::TensorInfo& ti = info(name);
  const auto& file = *files_[where_.at(name).first];
  const int64_t ndim = static_cast<int64_t>(ti.shape.size());
  MQ_CHECK_T(IoError, dim >= 0 && dim < ndim, file.path(), ": tensor '", name, "' of shape ",
             shape_str(ti.shape), " has no dim ", dim);
  const int64_t n = ti.shape[static_cast<size_t>(dim)];
  MQ_CHECK_T(IoError, 0 <= begin && begin <= end && end <= n, file.path(), ": tensor '", name,
             "' of shape ", shape_str(ti.shape), ": slice [", begin, ", ", end, ") of dim ", dim,
             " is out of range");
  std::vector<int64_t> out_shape = ti.shape;
  out_shape[static_cast<size_t>(dim)] = end - begin;
  const c10::ScalarType stored = io::to_scalar_type(ti.dtype);
  at::Tensor t = at::empty(out_shape, at::TensorOptions().dtype(stored));
  int64_t outer = 1;
  for (int64_t d = 0; d < dim; ++d) outer *= ti.shape[static_cast<size_t>(d)];
  size_t inner = io::dtype_size(ti.dtype);
  for (int64_t d = dim + 1; d < ndim; ++d)
    inner *= static_cast<size_t>(ti.shape[static_cast<size_t>(d)]);
  const auto bytes = file.data(ti);
  const size_t chunk = static_cast<size_t>(end - begin) * inner;
  auto* dst = static_cast<std::byte*>(t.data_ptr());
  // The mapping is only touched for the bytes copied, so a row slice reads just its rows.
  for (int64_t o = 0; o < outer && chunk > 0; ++o) {
    const size_t src =
        (static_cast<size_t>(o) * static_cast<size_t>(n) + static_cast<size_t>(begin)) * inner;
    std::memcpy(dst + static_cast<size_t>(o) * chunk, bytes.data() + src, chunk);
  }
  const c10::ScalarType want = dtype.value_or(stored);
  if (want == stored && device.is_cpu()) return t;
  return t.to(device, want);
}

at::Tensor Checkpoint::load_expect(const std::string& name, const std::vector<int64_t>& shape,
                                   std::optional<c10::ScalarType> dtype, c10::Device device) const {
  const io::TensorInfo& ti = info(name);
  MQ_CHECK_T(IoError, ti.shape == shape, file_of(name), ": tensor '", name, "' has shape ",
             shape_str(ti.shape), ", expected ", shape_str(shape));
  return load(name, dtype, device);
}

}  // namespace mq::models
