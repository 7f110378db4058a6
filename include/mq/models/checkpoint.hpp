#pragma once
/// Read-only access to the tensors of an HF checkpoint directory: `model.safetensors`, or the
/// shards listed by `model.safetensors.index.json` ({"weight_map": {tensor: file}}). Every file is
/// memory-mapped (mq::io::SafetensorsFile); a tensor is copied out of the mapping only when loaded,
/// straight into the requested dtype and device, so peak host RAM stays near one copy of what the
/// caller keeps. Row/column slices read only the bytes (rows) or pages (columns) they need, so a
/// tensor-parallel rank can load its shard without materialising the full tensor.
///
/// Errors (mq::IoError) name the file and tensor:
///   /m/model.safetensors.index.json: weight_map: tensor 'lm_head.weight' ->
///   'model-00009.safetensors': cannot open ... /m: no tensor 'model.layers.0.mlp.up_proj.weight'
///   (looked in model.safetensors) /m/model-00002-of-00002.safetensors: tensor 'x' has shape [64,
///   32], expected [64, 64]
///
/// Example:
///   auto ck = mq::models::Checkpoint::open("/models/SmolLM2-135M");
///   at::Tensor w = ck.load("model.layers.0.self_attn.q_proj.weight", at::kFloat);
///   at::Tensor rows = ck.load_slice("model.layers.0.mlp.up_proj.weight", 0, 128, 256, at::kFloat);
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "mq/io/safetensors.hpp"

namespace mq::models {

class Checkpoint {
 public:
  /// Opens `dir`: the index when `model.safetensors.index.json` exists (every shard it names must
  /// exist, every weight_map entry must be in its shard, and every tensor of a shard must be in
  /// weight_map), else `model.safetensors`. Throws mq::IoError when neither exists or a file is
  /// malformed.
  static Checkpoint open(const std::string& dir);

  const std::string& dir() const { return dir_; }
  /// Every tensor name, sorted.
  std::vector<std::string> names() const;
  bool contains(const std::string& name) const { return where_.count(name) != 0; }
  /// Header entry (dtype, shape). Throws mq::IoError naming the directory and tensor when absent.
  const io::TensorInfo& info(const std::string& name) const;
  /// The file holding `name` (full path).
  const std::string& file_of(const std::string& name) const;
  /// The checkpoint's dtype of `name`.
  c10::ScalarType dtype_of(const std::string& name) const;

  /// A new contiguous tensor holding `name`, converted to `dtype` (nullopt: the stored dtype) on
  /// `device`.
  at::Tensor load(const std::string& name, std::optional<c10::ScalarType> dtype = std::nullopt,
                  c10::Device device = c10::kCPU) const;
  /// Elements [begin, end) along `dim` (0 = rows, 1 = columns of a 2-D weight; any dim works), as a
  /// new contiguous tensor. Throws mq::IoError when the range is outside the tensor.
  at::Tensor load_slice(const std::string& name, int64_t dim, int64_t begin, int64_t end,
                        std::optional<c10::ScalarType> dtype = std::nullopt,
                        c10::Device device = c10::kCPU) const;
  /// load() after checking the stored shape equals `shape` (error names file, tensor and both
  /// shapes).
  at::Tensor load_expect(const std::string& name, const std::vector<int64_t>& shape,
                         std::optional<c10::ScalarType> dtype = std::nullopt,
                         c10::Device device = c10::kCPU) const;

 private:
  Checkpoint() = default;
  std::string dir_;
  std::vector<std::unique_ptr<io::SafetensorsFile>> files_;
  std::map<std::string, std::pair<size_t, const io::TensorInfo*>> where_;  // name -> (file, entry)
};

}  // namespace mq::models
