#include "mq/io/safetensors.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Float8_e4m3fn.h>
#include <c10/util/Float8_e5m2.h>
#include <c10/util/Half.h>

#include "mq/core/error.hpp"
#include "mq/io/safetensors_torch.hpp"

namespace fs = std::filesystem;
using mq::io::Dtype;

namespace {

class TempDir {
 public:
  TempDir() {
    path_ = fs::temp_directory_path() /
            ("mq_io_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter_++));
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  const fs::path& path() const { return path_; }

 private:
  static inline int counter_ = 0;
  fs::path path_;
};

std::vector<std::byte> read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::vector<char> c((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::vector<std::byte> out(c.size());
  if (!c.empty()) std::memcpy(out.data(), c.data(), c.size());
  return out;
}

void write_raw(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A file image from a header string and raw data, with an explicit (possibly lying) length.
std::string image(const std::string& header, const std::string& data, uint64_t len) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[static_cast<std::size_t>(i)] = static_cast<char>((len >> (8 * i)) & 0xff);
  return s + header + data;
}
std::string image(const std::string& header, const std::string& data) {
  return image(header, data, header.size());
}

template <typename T>
std::vector<std::byte> bytes_of(std::initializer_list<T> v) {
  std::vector<std::byte> out(v.size() * sizeof(T));
  std::memcpy(out.data(), v.begin(), out.size());
  return out;
}

std::vector<std::byte> from_hex(const std::string& hex) {
  std::vector<std::byte> out;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2)
    out.push_back(static_cast<std::byte>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return out;
}

// Expects open() to throw mq::IoError whose message contains every needle.
void expect_io_error(const std::string& path, std::initializer_list<std::string> needles) {
  try {
    auto f = mq::io::SafetensorsFile::open(path);
    ADD_FAILURE() << "no error for " << path;
  } catch (const mq::IoError& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    for (const auto& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << "'" << n << "' not in: " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "multi-line message: " << msg;
  }
}

}  // namespace

TEST(SafetensorsDtype, NamesSizesAndOrder) {
  const std::vector<std::pair<std::string, std::size_t>> expect = {
      {"BOOL", 1}, {"U8", 1},   {"I8", 1},   {"F8_E5M2", 1}, {"F8_E4M3", 1},
      {"I16", 2},  {"U16", 2},  {"F16", 2},  {"BF16", 2},    {"I32", 4},
      {"U32", 4},  {"F32", 4},  {"F64", 8},  {"I64", 8},     {"U64", 8}};
  for (std::size_t i = 0; i < expect.size(); ++i) {
    auto d = static_cast<Dtype>(i);
    EXPECT_EQ(mq::io::dtype_name(d), expect[i].first);
    EXPECT_EQ(mq::io::dtype_size(d), expect[i].second);
    EXPECT_EQ(mq::io::parse_dtype(expect[i].first), d);
  }
  EXPECT_FALSE(mq::io::parse_dtype("F12").has_value());
  EXPECT_FALSE(mq::io::parse_dtype("f32").has_value());
}

// The image below was produced by Python safetensors 0.8.0 (tests/unit/io/make_python_golden.py).
// Our writer must produce it byte for byte from the same tensors given in a different order, and
// our reader must read it back.
TEST(Safetensors, PythonGoldenByteExact) {
  const std::string golden_hex =
      "0004000000000000"
      // {"__metadata__":{"format":"pt"},"u64":...}       (1024 bytes incl. 7 spaces of padding)
      + [] {
          std::string h =
              R"({"__metadata__":{"format":"pt"},"u64":{"dtype":"U64","shape":[1],"data_offsets":[0,8]},"i64":{"dtype":"I64","shape":[1],"data_offsets":[8,16]},"f64":{"dtype":"F64","shape":[1],"data_offsets":[16,24]},"a.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[24,40]},"empty":{"dtype":"F32","shape":[0,3],"data_offsets":[40,40]},"scalar":{"dtype":"F32","shape":[],"data_offsets":[40,44]},"u32":{"dtype":"U32","shape":[1],"data_offsets":[44,48]},"i32":{"dtype":"I32","shape":[1],"data_offsets":[48,52]},"bf16":{"dtype":"BF16","shape":[2],"data_offsets":[52,56]},"f16":{"dtype":"F16","shape":[1,2],"data_offsets":[56,60]},"u16":{"dtype":"U16","shape":[1],"data_offsets":[60,62]},"i16":{"dtype":"I16","shape":[1],"data_offsets":[62,64]},"e4":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[64,66]},"e5":{"dtype":"F8_E5M2","shape":[2],"data_offsets":[66,68]},"i8":{"dtype":"I8","shape":[2],"data_offsets":[68,70]},"u8":{"dtype":"U8","shape":[3],"data_offsets":[70,73]},"bo":{"dtype":"BOOL","shape":[3],"data_offsets":[73,76]}}       )";
          std::string hex;
          char buf[3];
          for (unsigned char c : h) {
            std::snprintf(buf, sizeof buf, "%02x", c);
            hex += buf;
          }
          return hex;
        }() +
      "0500000000000080feffffffffffffff9a9999999999b93f0000803f0000004000004040000080400000803e"
      "00286beef9ffffff4040cd3d003c00b8ffffd4fe307e3cc0ff020102ff010001";
  const auto golden = from_hex(golden_hex);
  ASSERT_EQ(golden.size(), 8u + 1024u + 76u);

  const auto u64 = bytes_of<uint64_t>({(uint64_t{1} << 63) + 5});
  const auto i64 = bytes_of<int64_t>({-2});
  const auto f64 = bytes_of<double>({0.1});
  const auto aw = bytes_of<float>({1, 2, 3, 4});
  const auto scalar = bytes_of<float>({0.25f});
  const auto u32 = bytes_of<uint32_t>({4000000000u});
  const auto i32 = bytes_of<int32_t>({-7});
  const auto bf16 = bytes_of<c10::BFloat16>({c10::BFloat16(3.0f), c10::BFloat16(0.1f)});
  const auto f16 = bytes_of<c10::Half>({c10::Half(1.0f), c10::Half(-0.5f)});
  const auto u16 = bytes_of<uint16_t>({65535});
  const auto i16 = bytes_of<int16_t>({-300});
  const auto e4 = bytes_of<c10::Float8_e4m3fn>({c10::Float8_e4m3fn(0.5f), c10::Float8_e4m3fn(448.0f)});
  const auto e5 = bytes_of<c10::Float8_e5m2>({c10::Float8_e5m2(1.0f), c10::Float8_e5m2(-2.0f)});
  const auto i8 = bytes_of<int8_t>({-1, 2});
  const auto u8 = bytes_of<uint8_t>({1, 2, 255});
  const auto bo = bytes_of<uint8_t>({1, 0, 1});
  std::vector<mq::io::TensorRef> refs = {
      {"bo", Dtype::kBool, {3}, bo},        {"u8", Dtype::kU8, {3}, u8},
      {"i8", Dtype::kI8, {2}, i8},          {"e5", Dtype::kF8E5M2, {2}, e5},
      {"e4", Dtype::kF8E4M3, {2}, e4},      {"i16", Dtype::kI16, {1}, i16},
      {"u16", Dtype::kU16, {1}, u16},       {"f16", Dtype::kF16, {1, 2}, f16},
      {"bf16", Dtype::kBF16, {2}, bf16},    {"i32", Dtype::kI32, {1}, i32},
      {"u32", Dtype::kU32, {1}, u32},       {"a.weight", Dtype::kF32, {2, 2}, aw},
      {"scalar", Dtype::kF32, {}, scalar},  {"empty", Dtype::kF32, {0, 3}, {}},
      {"f64", Dtype::kF64, {1}, f64},       {"i64", Dtype::kI64, {1}, i64},
      {"u64", Dtype::kU64, {1}, u64},
  };
  EXPECT_EQ(mq::io::serialize(refs, {{"format", "pt"}}), golden);

  TempDir dir;
  const auto path = dir.file("golden.safetensors");
  mq::io::write_safetensors(path, refs, {{"format", "pt"}});
  EXPECT_EQ(read_all(path), golden);

  auto f = mq::io::SafetensorsFile::open(path);
  EXPECT_EQ(f.header_size(), 1024u);
  ASSERT_EQ(f.tensors().size(), refs.size());
  EXPECT_EQ(f.metadata(), (std::map<std::string, std::string>{{"format", "pt"}}));
  EXPECT_EQ(f.tensors().front().name, "u64");
  EXPECT_EQ(f.tensors().back().name, "bo");
  for (const auto& r : refs) {
    const auto& t = f.at(r.name);
    EXPECT_EQ(t.dtype, r.dtype) << r.name;
    EXPECT_EQ(t.shape, r.shape) << r.name;
    auto d = f.data(t);
    ASSERT_EQ(d.size(), r.bytes.size()) << r.name;
    EXPECT_TRUE(std::equal(d.begin(), d.end(), r.bytes.begin())) << r.name;
  }

  auto loaded = mq::io::load_safetensors(path);
  EXPECT_EQ(loaded.at("a.weight").scalar_type(), at::kFloat);
  EXPECT_EQ(loaded.at("a.weight")[1][0].item<float>(), 3.0f);
  EXPECT_EQ(loaded.at("scalar").dim(), 0);
  EXPECT_EQ(loaded.at("scalar").item<float>(), 0.25f);
  EXPECT_EQ(loaded.at("bf16").scalar_type(), at::kBFloat16);
  EXPECT_EQ(loaded.at("bf16")[1].item<float>(), static_cast<float>(c10::BFloat16(0.1f)));
  EXPECT_EQ(loaded.at("e4").scalar_type(), at::kFloat8_e4m3fn);
  EXPECT_EQ(loaded.at("e4").to(at::kFloat)[1].item<float>(), 448.0f);
  EXPECT_EQ(loaded.at("bo").scalar_type(), at::kBool);
  EXPECT_EQ(loaded.at("i64").item<int64_t>(), -2);
  EXPECT_EQ(loaded.at("empty").sizes(), (std::vector<int64_t>{0, 3}));
}

TEST(Safetensors, HeaderLayoutMatchesPython) {
  // Python: save({"attn.0": arange(6).float().reshape(1,2,3)}) has a 64-byte header (no padding)...
  const auto data = bytes_of<float>({0, 1, 2, 3, 4, 5});
  auto img = mq::io::serialize({{"attn.0", Dtype::kF32, {1, 2, 3}, data}});
  const std::string h = R"({"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}})";
  ASSERT_EQ(h.size(), 64u);
  EXPECT_EQ(img.size(), 8u + 64u + 24u);
  EXPECT_EQ(static_cast<int>(img[0]), 64);
  for (int i = 1; i < 8; ++i) EXPECT_EQ(static_cast<int>(img[i]), 0);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(img.data()) + 8, 64), h);
  // ... and escapes names as serde_json does (checked against safetensors 0.8.0).
  const auto one = bytes_of<float>({1});
  img = mq::io::serialize({{"x\"y\n\xc3\xa9", Dtype::kF32, {1}, one}}, {{"k1", "w\t"}});
  const std::string h2 =
      "{\"__metadata__\":{\"k1\":\"w\\t\"},\"x\\\"y\\n\xc3\xa9\":{\"dtype\":\"F32\",\"shape\":[1],"
      "\"data_offsets\":[0,4]}}";
  const std::string padded = h2 + std::string((8 - h2.size() % 8) % 8, ' ');
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(img.data()) + 8, padded.size()), padded);
  // The empty file.
  img = mq::io::serialize({});
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(img.data()), img.size()),
            std::string("\x08\0\0\0\0\0\0\0{}      ", 16));
}

TEST(Safetensors, WriterRejectsBadInput) {
  const auto four = bytes_of<float>({1});
  EXPECT_THROW(mq::io::serialize({{"a", Dtype::kF32, {1}, four}, {"a", Dtype::kF32, {1}, four}}),
               mq::IoError);
  EXPECT_THROW(mq::io::serialize({{"a", Dtype::kF32, {2}, four}}), mq::IoError);
  EXPECT_THROW(mq::io::serialize({{"a", Dtype::kF32, {-1}, four}}), mq::IoError);
  EXPECT_THROW(mq::io::serialize({{"__metadata__", Dtype::kF32, {1}, four}}), mq::IoError);
  EXPECT_THROW(mq::io::serialize({{"bad\xff", Dtype::kF32, {1}, four}}), mq::IoError);
}

struct RoundTripCase {
  at::ScalarType type;
  std::vector<int64_t> shape;
};

class SafetensorsRoundTrip : public ::testing::TestWithParam<RoundTripCase> {};

TEST_P(SafetensorsRoundTrip, TorchAdapter) {
  const auto& c = GetParam();
  at::manual_seed(7);
  at::Tensor src;
  // Random bit patterns, reinterpreted: covers every value class (NaN payloads included) without
  // relying on ops the small dtypes may lack.
  const auto item = static_cast<int64_t>(c10::elementSize(c.type));
  int64_t numel = 1;
  for (auto d : c.shape) numel *= d;
  at::Tensor raw = at::randint(0, 256, {numel * item}, at::TensorOptions().dtype(at::kByte));
  if (c.type == at::kBool) raw = raw.remainder(2);
  src = at::empty(c.shape, at::TensorOptions().dtype(c.type));
  if (numel > 0) std::memcpy(src.data_ptr(), raw.data_ptr(), static_cast<std::size_t>(raw.nbytes()));

  TempDir dir;
  const auto path = dir.file("rt.safetensors");
  mq::io::save_safetensors(path, {{"t", src}, {"other.weight", at::ones({3})}}, {{"k", "v"}});
  std::map<std::string, std::string> meta;
  auto back = mq::io::load_safetensors(path, &meta);
  EXPECT_EQ(meta.at("k"), "v");
  ASSERT_EQ(back.size(), 2u);
  const auto& t = back.at("t");
  EXPECT_EQ(t.scalar_type(), c.type);
  EXPECT_EQ(t.sizes(), at::IntArrayRef(c.shape));
  ASSERT_EQ(t.nbytes(), src.nbytes());
  if (numel > 0) {
    EXPECT_EQ(std::memcmp(t.data_ptr(), src.data_ptr(), t.nbytes()), 0);
  }
  EXPECT_TRUE(at::equal(mq::io::load_safetensor(path, "other.weight"), at::ones({3})));
  // Writing what we read gives the same file.
  const auto first = read_all(path);
  mq::io::save_safetensors(path, back, meta);
  EXPECT_EQ(read_all(path), first);
}

INSTANTIATE_TEST_SUITE_P(
    AllDtypes, SafetensorsRoundTrip,
    ::testing::Values(RoundTripCase{at::kBool, {33, 7}}, RoundTripCase{at::kByte, {5}},
                      RoundTripCase{at::kChar, {2, 3, 5}}, RoundTripCase{at::kShort, {1}},
                      RoundTripCase{at::kUInt16, {4, 4}}, RoundTripCase{at::kInt, {33}},
                      RoundTripCase{at::kUInt32, {3, 1}}, RoundTripCase{at::kLong, {}},
                      RoundTripCase{at::kUInt64, {2}}, RoundTripCase{at::kHalf, {64, 128}},
                      RoundTripCase{at::kBFloat16, {33, 48}}, RoundTripCase{at::kFloat, {0, 4}},
                      RoundTripCase{at::kDouble, {7, 1, 3}},
                      RoundTripCase{at::kFloat8_e4m3fn, {16, 9}},
                      RoundTripCase{at::kFloat8_e5m2, {1, 1}}));

TEST(Safetensors, NonContiguousAndUnsupported) {
  TempDir dir;
  const auto path = dir.file("t.safetensors");
  at::Tensor a = at::arange(6, at::kFloat).reshape({2, 3}).t();  // (3, 2), not contiguous
  mq::io::save_safetensors(path, {{"a", a}});
  EXPECT_TRUE(at::equal(mq::io::load_safetensor(path, "a"), a.contiguous()));
  try {
    mq::io::save_safetensors(path, {{"c", at::zeros({2}, at::kComplexFloat)}});
    ADD_FAILURE() << "complex accepted";
  } catch (const mq::IoError& e) {
    EXPECT_NE(std::string(e.what()).find("'c'"), std::string::npos) << e.what();
  }
  // The failed save left the previous file intact.
  EXPECT_TRUE(at::equal(mq::io::load_safetensor(path, "a"), a.contiguous()));
  try {
    (void)mq::io::load_safetensor(path, "nope");
    ADD_FAILURE() << "missing tensor found";
  } catch (const mq::IoError& e) {
    EXPECT_NE(std::string(e.what()).find("no tensor 'nope'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
}

TEST(Safetensors, AtomicWrite) {
  TempDir dir;
  const auto path = dir.file("out.safetensors");
  mq::io::save_safetensors(path, {{"a", at::ones({4})}});
  const auto before = read_all(path);
  mq::io::save_safetensors(path, {{"a", at::zeros({4})}, {"b", at::ones({1})}});
  EXPECT_NE(read_all(path), before);
  EXPECT_TRUE(at::equal(mq::io::load_safetensor(path, "a"), at::zeros({4})));
  // Nothing else is left in the directory (no temporaries).
  int n = 0;
  for (const auto& e : fs::directory_iterator(dir.path())) {
    (void)e;
    ++n;
  }
  EXPECT_EQ(n, 1);
  // A directory that does not exist: error naming the file, nothing created.
  const auto bad = dir.file("no/such/dir/out.safetensors");
  try {
    mq::io::save_safetensors(bad, {{"a", at::ones({4})}});
    ADD_FAILURE() << "write into a missing directory succeeded";
  } catch (const mq::IoError& e) {
    EXPECT_NE(std::string(e.what()).find(bad), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(bad));
}

// ---- corrupt / lying files: each gives one clear line naming the file (and the tensor) ----

class SafetensorsCorrupt : public ::testing::Test {
 protected:
  std::string put(const std::string& bytes) {
    auto p = dir_.file("bad" + std::to_string(n_++) + ".safetensors");
    write_raw(p, bytes);
    return p;
  }
  TempDir dir_;
  int n_ = 0;
};

TEST_F(SafetensorsCorrupt, MissingFile) {
  expect_io_error(dir_.file("absent.safetensors"), {"cannot open", "No such file"});
}

TEST_F(SafetensorsCorrupt, TooShort) {
  expect_io_error(put(""), {"0 bytes", "shorter than the 8-byte header length"});
  expect_io_error(put("abc"), {"3 bytes"});
}

TEST_F(SafetensorsCorrupt, BadHeaderLength) {
  const std::string h = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  expect_io_error(put(image(h, "1234", uint64_t{1} << 40)), {"header length 1099511627776", "implausible"});
  expect_io_error(put(image(h, "1234", h.size() + 100)), {"runs past the end of the file", "truncated"});
  // A length that cuts the JSON short.
  expect_io_error(put(image(h, "1234", 10)), {"not valid JSON"});
}

TEST_F(SafetensorsCorrupt, BadJson) {
  expect_io_error(put(image(R"({"a":{"dtype":"F32",)", "")), {"header is not valid JSON"});
  expect_io_error(put(image("[1,2]", "")), {"header is not a JSON object"});
  expect_io_error(put(image(R"({"a":[0,4]})", "1234")), {"tensor 'a'", "not a JSON object"});
  expect_io_error(put(image(R"({"__metadata__":{"k":1}})", "")), {"__metadata__ 'k'", "not a string"});
  expect_io_error(
      put(image(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                "1234")),
      {"names 'a' twice"});
}

TEST_F(SafetensorsCorrupt, BadFields) {
  expect_io_error(put(image(R"({"w":{"dtype":"F12","shape":[1],"data_offsets":[0,4]}})", "1234")),
                  {"tensor 'w'", "unknown dtype 'F12'"});
  expect_io_error(put(image(R"({"w":{"shape":[1],"data_offsets":[0,4]}})", "1234")),
                  {"tensor 'w'", "'dtype'"});
  expect_io_error(put(image(R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", "1234")),
                  {"tensor 'w'", "shape entry -1"});
  expect_io_error(put(image(R"({"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", "1234")),
                  {"tensor 'w'", "shape entry 1.5"});
  expect_io_error(put(image(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", "1234")),
                  {"tensor 'w'", "data_offsets"});
  expect_io_error(put(image(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", "1234")),
                  {"tensor 'w'", "end before they begin"});
  expect_io_error(
      put(image(R"({"w":{"dtype":"F32","shape":[4611686018427387904,4611686018427387904],"data_offsets":[0,4]}})",
                "1234")),
      {"tensor 'w'", "overflows"});
}

TEST_F(SafetensorsCorrupt, SizeMismatch) {
  expect_io_error(put(image(R"({"w":{"dtype":"BF16","shape":[3],"data_offsets":[0,4]}})", "1234")),
                  {"tensor 'w'", "needs 6 bytes", "span 4"});
}

TEST_F(SafetensorsCorrupt, OverlappingOffsets) {
  expect_io_error(
      put(image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                std::string(12, 'x'))),
      {"tensor 'b'", "overlap tensor 'a'"});
  // Two tensors on the same bytes.
  expect_io_error(
      put(image(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                std::string(4, 'x'))),
      {"overlap"});
}

TEST_F(SafetensorsCorrupt, GapTruncationTrailing) {
  expect_io_error(
      put(image(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                std::string(12, 'x'))),
      {"tensor 'b'", "gap after byte 4"});
  // The header promises 16 bytes, the file stops after 8.
  expect_io_error(put(image(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", std::string(8, 'x'))),
                  {"tensor 'w'", "run past the end of the data section (8 bytes)", "truncated"});
  expect_io_error(put(image(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", std::string(6, 'x'))),
                  {"cover 4 bytes", "has 6", "trailing"});
}

TEST_F(SafetensorsCorrupt, TruncatedRealFile) {
  const auto good = dir_.file("good.safetensors");
  mq::io::save_safetensors(good, {{"w", at::ones({8, 8})}, {"v", at::ones({3}, at::kBFloat16)}});
  const auto bytes = read_all(good);
  for (std::size_t cut : {bytes.size() - 1, bytes.size() - 200, std::size_t{60}, std::size_t{7}}) {
    std::string s(reinterpret_cast<const char*>(bytes.data()), cut);
    auto p = put(s);
    EXPECT_THROW(mq::io::SafetensorsFile::open(p), mq::IoError) << "cut at " << cut;
  }
}
