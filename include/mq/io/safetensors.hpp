#pragma once
/// Safetensors files (https://huggingface.co/docs/safetensors), torch-free core.
///
/// Layout of a file: an 8-byte little-endian u64 N, then N bytes of UTF-8 JSON (the header), then the
/// data section. The header maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]}
/// (offsets relative to the data section) plus an optional "__metadata__" object of string values.
///
/// Reading maps the file (mmap) and validates everything the Python/Rust `safetensors` reader
/// validates: header length vs file size, valid JSON object, known dtype, offsets contiguous from 0
/// and covering the data section exactly (no gaps, no overlap, no trailing bytes), byte size ==
/// numel * itemsize. Any violation throws mq::IoError naming the file and, where there is one, the
/// tensor.
///
/// Writing reproduces the Python writer byte for byte: tensors sorted by descending dtype (the Rust
/// enum order, i.e. roughly descending alignment) then by name, compact JSON with "__metadata__"
/// first and tensors in data order, header padded with spaces to a multiple of 8. (Python keeps
/// metadata in a hash map, so with two or more metadata keys its key order is unspecified; we sort.)
/// Files are written atomically: `<path>.tmp.<pid>`, fsync, rename, fsync of the directory.
///
/// Example:
///   auto f = mq::io::SafetensorsFile::open("model.safetensors");
///   for (const auto& t : f.tensors()) use(t.name, t.dtype, t.shape, f.data(t));
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace mq::io {

/// Element types of the safetensors format, in the Rust crate's declaration order (which is the order
/// the writer sorts by).
enum class Dtype : int {
  kBool = 0,
  kU8,
  kI8,
  kF8E5M2,
  kF8E4M3,
  kI16,
  kU16,
  kF16,
  kBF16,
  kI32,
  kU32,
  kF32,
  kF64,
  kI64,
  kU64,
};

/// The header spelling: "BOOL", "U8", "F8_E4M3", "BF16", ...
std::string_view dtype_name(Dtype d);
/// Inverse of dtype_name; nullopt for an unknown string.
std::optional<Dtype> parse_dtype(std::string_view s);
/// Bytes per element.
std::size_t dtype_size(Dtype d);

/// One header entry.
struct TensorInfo {
  std::string name;
  Dtype dtype = Dtype::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  ///< offset into the data section
  uint64_t end = 0;    ///< one past the last byte
  int64_t numel() const;
  uint64_t nbytes() const { return end - begin; }
};

/// A read-only, validated view of one file (memory-mapped). Move-only; the mapping lives as long as
/// the object.
class SafetensorsFile {
 public:
  /// Opens, maps and validates `path`. Throws mq::IoError ("<path>: <problem>").
  static SafetensorsFile open(const std::string& path);

  SafetensorsFile(SafetensorsFile&& o) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&& o) noexcept;
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;
  ~SafetensorsFile();

  const std::string& path() const { return path_; }
  /// Every tensor, in data (offset) order.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  /// nullptr when absent.
  const TensorInfo* find(std::string_view name) const;
  /// Throws mq::IoError "<path>: no tensor '<name>'" when absent.
  const TensorInfo& at(std::string_view name) const;
  /// The tensor's bytes inside the mapping (little-endian, C order). Not necessarily aligned.
  std::span<const std::byte> data(const TensorInfo& t) const;
  /// The "__metadata__" object (empty when absent).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  /// Size of the JSON header in bytes (N), including the padding.
  uint64_t header_size() const { return header_size_; }

 private:
  SafetensorsFile() = default;
  void unmap() noexcept;

  std::string path_;
  const std::byte* map_ = nullptr;
  std::size_t map_size_ = 0;
  uint64_t header_size_ = 0;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

/// Parses and validates a complete file image held in memory (what open() does after mapping).
/// `what` names the source in error messages. Returns the entries in data order and fills
/// `metadata` and `header_size`.
std::vector<TensorInfo> parse_header(std::span<const std::byte> file, const std::string& what,
                                     std::map<std::string, std::string>& metadata,
                                     uint64_t& header_size);

/// A tensor to write: name, dtype, shape and its bytes (numel * itemsize, little-endian, C order).
struct TensorRef {
  std::string name;
  Dtype dtype = Dtype::kF32;
  std::vector<int64_t> shape;
  std::span<const std::byte> bytes;
};

/// The complete file image the Python writer would produce for these tensors and metadata.
/// Throws mq::IoError on a duplicate name, a negative dim or a byte size that does not match.
std::vector<std::byte> serialize(const std::vector<TensorRef>& tensors,
                                 const std::map<std::string, std::string>& metadata = {});

/// Writes serialize(tensors, metadata) to `path` atomically (never leaves a partial file at `path`;
/// the temporary is removed on failure). Throws mq::IoError naming the file.
void write_safetensors(const std::string& path, const std::vector<TensorRef>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

/// Writes `bytes` to `path` atomically (temporary + fsync + rename). Throws mq::IoError.
void write_file_atomic(const std::string& path, std::span<const std::byte> bytes);

}  // namespace mq::io
