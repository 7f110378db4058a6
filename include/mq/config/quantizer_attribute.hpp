#pragma once
/// QuantizerAttributeConfig: every field of ModelOpt's `QuantizerAttributeConfig` (reference §1.1), in
/// declaration order, with the same defaults. Parsing/validation/dumping live in config/json.hpp.
///
/// Example (NVFP4 weight, as in NVFP4_DEFAULT_CFG):
///   QuantizerAttributeConfig c;
///   c.num_bits = NumBits::floating(2, 1);
///   c.block_sizes = BlockSizes{.axes = {{-1, 16}}, .type = "dynamic", .scale_bits = NumBits::floating(4, 3)};
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace mq::config {

/// `num_bits` (and `scale_bits`): an int N (INT-N), an (E, M) float format, or an opaque string for
/// custom backends (never validated, as in ModelOpt).
struct NumBits {
  enum class Kind { kInt, kFloat, kCustom };
  Kind kind = Kind::kInt;
  int bits = 8;          ///< kInt
  int exponent = 0;      ///< kFloat
  int mantissa = 0;      ///< kFloat
  std::string custom;    ///< kCustom

  static NumBits integer(int n) { return NumBits{Kind::kInt, n, 0, 0, {}}; }
  static NumBits floating(int e, int m) { return NumBits{Kind::kFloat, 0, e, m, {}}; }
  bool is_int() const { return kind == Kind::kInt; }
  bool is_float(int e, int m) const { return kind == Kind::kFloat && exponent == e && mantissa == m; }
  bool operator==(const NumBits&) const = default;
};

/// An axis -> block length map; std::nullopt means "the whole axis" (ModelOpt's None).
using AxisBlockMap = std::map<int, std::optional<int64_t>>;

/// `block_sizes` (reference §1.2). String keys besides the axes are the named members.
struct BlockSizes {
  AxisBlockMap axes;
  std::optional<std::string> type;              ///< "static" (default when absent) or "dynamic"
  std::optional<NumBits> scale_bits;            ///< (4,3) NVFP4, (8,0) MX E8M0, int 8 NF4 double quant
  std::optional<AxisBlockMap> scale_block_sizes;///< NF4 double quantization only
  std::optional<int> four_over_six;             ///< stored as int (pydantic coerces bool to int)

  bool is_dynamic() const { return type && *type == "dynamic"; }
  bool operator==(const BlockSizes&) const = default;
};

/// `bias` (reference §2.8): int keys are the axes REDUCED when computing the bias.
struct BiasConfig {
  AxisBlockMap axes;
  std::optional<std::string> type;    ///< "static" (default) or "dynamic"
  std::optional<std::string> method;  ///< "mean" (default) or "max_min"
  bool operator==(const BiasConfig&) const = default;
};

/// RotateConfig (also accepts a plain bool in JSON: `rotate: true` == {enable: true}).
struct RotateConfig {
  bool enable = false;
  std::string mode = "rotate";  ///< "rotate" or "rotate_back"
  bool rotate_fp32 = false;
  std::optional<int> block_size;
  bool given_as_bool = true;    ///< true when the user wrote a bool (affects dumps only)
  std::set<std::string> fields_set;  ///< keys given when written as a dict (exclude_unset dumps)
  bool operator==(const RotateConfig&) const = default;
};

/// `axis`: None, an int, or a tuple of ints. `is_tuple` keeps the user's spelling for dumps/repr.
struct Axis {
  std::vector<int> dims;
  bool is_tuple = false;
  bool operator==(const Axis&) const = default;
};

struct QuantizerAttributeConfig {
  bool enable = true;
  NumBits num_bits = NumBits::integer(8);
  std::optional<double> effective_bits;
  std::optional<Axis> axis;
  bool fake_quant = true;
  bool is_unsigned = false;                 ///< JSON key "unsigned"
  bool narrow_range = false;
  bool learn_amax = false;                  ///< deprecated; true is rejected
  std::string type = "static";              ///< "static" | "dynamic"
  std::optional<BlockSizes> block_sizes;
  std::optional<BiasConfig> bias;
  std::string trt_high_precision_dtype = "Float";
  std::string calibrator = "max";           ///< "max" | "histogram"
  RotateConfig rotate;
  bool pass_through_bwd = true;
  std::optional<std::string> backend;
  nlohmann::json backend_extra_args;        ///< null when unset
  bool use_constant_amax = false;
  std::optional<double> constant_amax;

  /// JSON keys the user set explicitly, as pydantic's `model_fields_set` (exclude_unset dumps and
  /// set_quantizer_attributes_partial use it).
  std::set<std::string> fields_set;

  bool operator==(const QuantizerAttributeConfig& o) const = default;

  bool is_dynamic() const { return type == "dynamic"; }
  /// NVFP4: (2,1) elements with (4,3) block scales.
  bool is_nvfp4() const {
    return num_bits.is_float(2, 1) && block_sizes && block_sizes->scale_bits &&
           block_sizes->scale_bits->is_float(4, 3);
  }
  /// MX: any element format with E8M0 (8,0) block scales.
  bool is_mx() const {
    return block_sizes && block_sizes->scale_bits && block_sizes->scale_bits->is_float(8, 0);
  }
  bool is_dynamic_block() const { return block_sizes && block_sizes->is_dynamic(); }
  bool is_static_block() const { return block_sizes && !block_sizes->is_dynamic() && fake_quant; }
};

}  // namespace mq::config
