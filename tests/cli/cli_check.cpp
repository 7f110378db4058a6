// Checks a file written by `mqdist tensor` against the library called directly, bit for bit, plus
// optional expectations on names, dtypes and shapes.
//
//   mqdist_cli_check <in> <out> <fake|real> <quantizer|attr> <spec> [NAME:DTYPE:SHAPE ...]
//
// SHAPE is dims joined by 'x' ("64x8"), or "scalar" for a 0-d tensor; DTYPE is the safetensors name
// (BF16, U8, F8_E4M3, F32, ...). Exit 0 when everything matches, 1 with one line per problem.
#include <cstdio>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "mq/export/tensor_mode.hpp"
#include "mq/io/safetensors.hpp"
#include "mq/io/safetensors_torch.hpp"

namespace {

std::string shape_of(const mq::io::TensorInfo& t) {
  if (t.shape.empty()) return "scalar";
  std::string s;
  for (size_t i = 0; i < t.shape.size(); ++i) s += (i ? "x" : "") + std::to_string(t.shape[i]);
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 6) {
    std::fprintf(stderr, "usage: %s <in> <out> <fake|real> <quantizer|attr> <spec> [NAME:DTYPE:SHAPE ...]\n", argv[0]);
    return 2;
  }
  int problems = 0;
  auto problem = [&](const std::string& m) {
    std::fprintf(stderr, "cli_check: %s\n", m.c_str());
    ++problems;
  };
  try {
    const std::string in = argv[1], out = argv[2], mode = argv[3], kind = argv[4], spec_text = argv[5];
    const auto spec = kind == "quantizer" ? mq::hf_export::parse_quantizer_spec(spec_text)
                                          : mq::hf_export::attr_quantizer_spec(spec_text);
    mq::hf_export::TensorModeOptions opts;
    opts.real = mode == "real";
    const auto expected = mq::hf_export::quantize_tensors(mq::io::load_safetensors(in), spec, opts);

    auto file = mq::io::SafetensorsFile::open(out);
    if (file.tensors().size() != expected.tensors.size())
      problem("tensor count " + std::to_string(file.tensors().size()) + " != " +
              std::to_string(expected.tensors.size()));
    for (const auto& [name, want] : expected.tensors) {
      const auto* info = file.find(name);
      if (info == nullptr) {
        problem("missing tensor '" + name + "'");
        continue;
      }
      const at::Tensor c = want.contiguous();
      if (mq::io::to_safetensors_dtype(c.scalar_type()) != info->dtype ||
          std::vector<int64_t>(c.sizes().begin(), c.sizes().end()) != info->shape) {
        problem("'" + name + "': dtype/shape differ from the library's");
        continue;
      }
      auto bytes = file.data(*info);
      if (bytes.size() != static_cast<size_t>(c.nbytes()) ||
          (bytes.size() && std::memcmp(bytes.data(), c.data_ptr(), bytes.size()) != 0))
        problem("'" + name + "': bytes differ from the library's");
    }
    for (int i = 6; i < argc; ++i) {
      std::string e = argv[i];
      auto c2 = e.rfind(':'), c1 = e.rfind(':', c2 - 1);
      if (c1 == std::string::npos || c2 == std::string::npos) {
        problem("bad expectation '" + e + "'");
        continue;
      }
      const std::string name = e.substr(0, c1), dtype = e.substr(c1 + 1, c2 - c1 - 1), shape = e.substr(c2 + 1);
      const auto* info = file.find(name);
      if (info == nullptr) {
        problem("expected tensor '" + name + "' is absent");
        continue;
      }
      if (std::string(mq::io::dtype_name(info->dtype)) != dtype)
        problem("'" + name + "': dtype " + std::string(mq::io::dtype_name(info->dtype)) + ", expected " + dtype);
      if (shape_of(*info) != shape) problem("'" + name + "': shape " + shape_of(*info) + ", expected " + shape);
    }
  } catch (const std::exception& e) {
    problem(e.what());
  }
  if (problems == 0) std::printf("cli_check: OK\n");
  return problems ? 1 : 0;
}
