#pragma once
// Test helpers shared by the models tests: the tiny checkpoints of tests/models/gen_tiny.py, their
// transformers goldens, load options of a dtype, and a relative error.
#include <ATen/ATen.h>

#include <map>
#include <string>

#include "mq/io/safetensors_torch.hpp"
#include "mq/models/causal_lm.hpp"

namespace mq::test {

inline std::string tiny(const std::string& name) {
  return std::string(MQ_SOURCE_DIR) + "/tests/models/tiny/" + name;
}

inline std::map<std::string, at::Tensor> golden(const std::string& name) {
  return mq::io::load_safetensors(tiny(name) + "/golden.safetensors");
}

/// Load options that convert the checkpoint to `t`.
inline mq::models::LoadOptions with_dtype(c10::ScalarType t) {
  mq::models::LoadOptions o;
  o.dtype = t;
  return o;
}

/// Max |a - b| relative to max |b|.
inline double rel_err(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>() /
         b.abs().max().item<double>();
}

}  // namespace mq::test
