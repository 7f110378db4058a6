#include "mq/io/safetensors.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <set>
#include <utility>

#include <nlohmann/json.hpp>

#include "mq/core/error.hpp"

namespace mq::io {

namespace {

struct DtypeRow {
  Dtype dtype;
  std::string_view name;
  std::size_t size;
};

// Indexed by the enum value.
constexpr std::array<DtypeRow, 15> kDtypes{{
    {Dtype::kBool, "BOOL", 1},
    {Dtype::kU8, "U8", 1},
    {Dtype::kI8, "I8", 1},
    {Dtype::kF8E5M2, "F8_E5M2", 1},
    {Dtype::kF8E4M3, "F8_E4M3", 1},
    {Dtype::kI16, "I16", 2},
    {Dtype::kU16, "U16", 2},
    {Dtype::kF16, "F16", 2},
    {Dtype::kBF16, "BF16", 2},
    {Dtype::kI32, "I32", 4},
    {Dtype::kU32, "U32", 4},
    {Dtype::kF32, "F32", 4},
    {Dtype::kF64, "F64", 8},
    {Dtype::kI64, "I64", 8},
    {Dtype::kU64, "U64", 8},
}};

// Same limit as the Rust reader: a larger header is certainly not a safetensors file.
constexpr uint64_t kMaxHeaderSize = 100'000'000;

const DtypeRow& row(Dtype d) {
  auto i = static_cast<std::size_t>(d);
  MQ_ASSERT(i < kDtypes.size());
  return kDtypes[i];
}

std::string errno_text() { return std::strerror(errno); }

// Reads a JSON value that must be a non-negative integer fitting in uint64.
bool as_u64(const nlohmann::json& v, uint64_t& out) {
  if (v.is_number_unsigned()) {
    out = v.get<uint64_t>();
    return true;
  }
  if (v.is_number_integer()) {
    auto s = v.get<int64_t>();
    if (s < 0) return false;
    out = static_cast<uint64_t>(s);
    return true;
  }
  return false;
}

struct Prepared {
  std::string header;  // padded JSON
  std::vector<const TensorRef*> order;
  uint64_t data_size = 0;
};

std::string json_string(const std::string& s) {
  try {
    return nlohmann::json(s).dump();
  } catch (const nlohmann::json::exception&) {
    MQ_THROW(IoError, "safetensors: name or metadata is not valid UTF-8: '", s, "'");
  }
}

Prepared prepare(const std::vector<TensorRef>& tensors,
                 const std::map<std::string, std::string>& metadata) {
  Prepared p;
  std::set<std::string_view> names;
  for (const auto& t : tensors) {
    MQ_CHECK_T(IoError, !t.name.empty(), "safetensors: empty tensor name");
    MQ_CHECK_T(IoError, t.name != "__metadata__",
               "safetensors: '__metadata__' is reserved and cannot name a tensor");
    MQ_CHECK_T(IoError, names.insert(t.name).second, "safetensors: duplicate tensor name '",
               t.name, "'");
    uint64_t numel = 1;
    for (auto d : t.shape) {
      MQ_CHECK_T(IoError, d >= 0, "safetensors: tensor '", t.name, "': negative dimension ", d);
      numel *= static_cast<uint64_t>(d);
    }
    MQ_CHECK_T(IoError, numel * dtype_size(t.dtype) == t.bytes.size(), "safetensors: tensor '",
               t.name, "': ", t.bytes.size(), " bytes given for ", numel, " elements of ",
               dtype_name(t.dtype));
    p.order.push_back(&t);
  }
  // The Python writer's order: descending dtype, then ascending name (byte-wise).
  std::sort(p.order.begin(), p.order.end(), [](const TensorRef* a, const TensorRef* b) {
    if (a->dtype != b->dtype) return static_cast<int>(a->dtype) > static_cast<int>(b->dtype);
    return a->name < b->name;
  });

  // Built by hand rather than with a JSON object so that the key order is the data order, exactly as
  // serde serialises it; the string escaping is nlohmann's, which matches serde_json's.
  std::string h = "{";
  bool first = true;
  if (!metadata.empty()) {
    h += "\"__metadata__\":{";
    bool first_key = true;
    for (const auto& [k, v] : metadata) {
      if (!first_key) h += ',';
      first_key = false;
      h += json_string(k);
      h += ':';
      h += json_string(v);
    }
    h += '}';
    first = false;
  }
  uint64_t offset = 0;
  for (const TensorRef* t : p.order) {
    if (!first) h += ',';
    first = false;
    h += json_string(t->name);
    h += ":{\"dtype\":\"";
    h += dtype_name(t->dtype);
    h += "\",\"shape\":[";
    for (std::size_t i = 0; i < t->shape.size(); ++i) {
      if (i) h += ',';
      h += std::to_string(t->shape[i]);
    }
    h += "],\"data_offsets\":[";
    h += std::to_string(offset);
    h += ',';
    offset += t->bytes.size();
    h += std::to_string(offset);
    h += "]}";
  }
  h += '}';
  h.append((8 - h.size() % 8) % 8, ' ');
  p.header = std::move(h);
  p.data_size = offset;
  return p;
}

void put_u64_le(std::byte* dst, uint64_t v) {
  for (int i = 0; i < 8; ++i) dst[i] = static_cast<std::byte>((v >> (8 * i)) & 0xff);
}

// Closes the descriptor and removes the temporary unless released.
class TmpFile {
 public:
  explicit TmpFile(std::string final_path)
      : final_(std::move(final_path)),
        tmp_(final_ + ".tmp." + std::to_string(::getpid())) {
    fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    MQ_CHECK_T(IoError, fd_ >= 0, final_, ": cannot create '", tmp_, "': ", errno_text());
  }
  TmpFile(const TmpFile&) = delete;
  TmpFile& operator=(const TmpFile&) = delete;
  ~TmpFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(tmp_.c_str());
  }

  void write(const void* p, std::size_t n) {
    const auto* c = static_cast<const char*>(p);
    while (n > 0) {
      ssize_t w = ::write(fd_, c, n);
      if (w < 0 && errno == EINTR) continue;
      MQ_CHECK_T(IoError, w > 0, final_, ": write failed: ", errno_text());
      c += w;
      n -= static_cast<std::size_t>(w);
    }
  }

  void commit() {
    MQ_CHECK_T(IoError, ::fsync(fd_) == 0, final_, ": fsync failed: ", errno_text());
    int rc = ::close(fd_);
    fd_ = -1;
    MQ_CHECK_T(IoError, rc == 0, final_, ": close failed: ", errno_text());
    MQ_CHECK_T(IoError, ::rename(tmp_.c_str(), final_.c_str()) == 0, final_,
               ": cannot rename the temporary into place: ", errno_text());
    committed_ = true;
    // Make the rename itself durable; failure here leaves a complete file, so it is not an error.
    auto dir = std::filesystem::path(final_).parent_path();
    int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      ::fsync(dfd);
      ::close(dfd);
    }
  }

 private:
  std::string final_;
  std::string tmp_;
  int fd_ = -1;
  bool committed_ = false;
};

}  // namespace

std::string_view dtype_name(Dtype d) { return row(d).name; }

std::optional<Dtype> parse_dtype(std::string_view s) {
  for (const auto& r : kDtypes)
    if (r.name == s) return r.dtype;
  return std::nullopt;
}

std::size_t dtype_size(Dtype d) { return row(d).size; }

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

std::vector<TensorInfo> parse_header(std::span<const std::byte> file, const std::string& what,
                                     std::map<std::string, std::string>& metadata,
                                     uint64_t& header_size) {
  MQ_CHECK_T(IoError, file.size() >= 8, what, ": not a safetensors file: ", file.size(),
             " bytes, shorter than the 8-byte header length");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(file[static_cast<std::size_t>(i)]);
  MQ_CHECK_T(IoError, n <= kMaxHeaderSize, what, ": header length ", n,
             " is implausible (limit 100000000): not a safetensors file");
  MQ_CHECK_T(IoError, n + 8 <= file.size(), what, ": header length ", n,
             " runs past the end of the file (", file.size(), " bytes): truncated file");
  header_size = n;
  std::string_view text(reinterpret_cast<const char*>(file.data()) + 8, n);

  // Duplicate top-level keys are ambiguous (nlohmann would keep the last one silently).
  std::set<std::string> keys;
  std::string duplicate;
  auto cb = [&](int depth, nlohmann::json::parse_event_t ev, nlohmann::json& parsed) {
    if (depth == 1 && ev == nlohmann::json::parse_event_t::key) {
      auto k = parsed.get<std::string>();
      if (!keys.insert(k).second && duplicate.empty()) duplicate = k;
    }
    return true;
  };
  nlohmann::json h;
  try {
    h = nlohmann::json::parse(text.begin(), text.end(), cb);
  } catch (const nlohmann::json::exception& e) {
    MQ_THROW(IoError, what, ": header is not valid JSON: ", e.what());
  }
  MQ_CHECK_T(IoError, h.is_object(), what, ": header is not a JSON object");
  MQ_CHECK_T(IoError, duplicate.empty(), what, ": header names '", duplicate, "' twice");

  metadata.clear();
  std::vector<TensorInfo> out;
  for (auto it = h.begin(); it != h.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::json& v = it.value();
    if (name == "__metadata__") {
      MQ_CHECK_T(IoError, v.is_object(), what, ": __metadata__ is not a JSON object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        MQ_CHECK_T(IoError, m.value().is_string(), what, ": __metadata__ '", m.key(),
                   "' is not a string");
        metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    MQ_CHECK_T(IoError, v.is_object(), what, ": tensor '", name, "': entry is not a JSON object");
    TensorInfo t;
    t.name = name;
    auto dt = v.find("dtype");
    MQ_CHECK_T(IoError, dt != v.end() && dt->is_string(), what, ": tensor '", name,
               "': missing or non-string 'dtype'");
    auto parsed = parse_dtype(dt->get<std::string>());
    MQ_CHECK_T(IoError, parsed.has_value(), what, ": tensor '", name, "': unknown dtype '",
               dt->get<std::string>(), "'");
    t.dtype = *parsed;
    auto sh = v.find("shape");
    MQ_CHECK_T(IoError, sh != v.end() && sh->is_array(), what, ": tensor '", name,
               "': missing or non-array 'shape'");
    uint64_t numel = 1;
    bool overflow = false;
    for (const auto& d : *sh) {
      uint64_t u = 0;
      MQ_CHECK_T(IoError, as_u64(d, u) && u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()),
                 what, ": tensor '", name, "': shape entry ", d.dump(),
                 " is not a non-negative integer");
      t.shape.push_back(static_cast<int64_t>(u));
      if (u != 0 && numel > std::numeric_limits<uint64_t>::max() / u) overflow = true;
      numel *= u;
    }
    auto off = v.find("data_offsets");
    MQ_CHECK_T(IoError, off != v.end() && off->is_array() && off->size() == 2, what, ": tensor '",
               name, "': 'data_offsets' must be an array [begin, end]");
    MQ_CHECK_T(IoError, as_u64((*off)[0], t.begin) && as_u64((*off)[1], t.end), what, ": tensor '",
               name, "': data_offsets ", off->dump(), " are not non-negative integers");
    MQ_CHECK_T(IoError, t.begin <= t.end, what, ": tensor '", name, "': data_offsets ",
               off->dump(), " end before they begin");
    const uint64_t item = dtype_size(t.dtype);
    MQ_CHECK_T(IoError, !overflow && numel <= std::numeric_limits<uint64_t>::max() / item, what,
               ": tensor '", name, "': shape ", sh->dump(), " overflows");
    MQ_CHECK_T(IoError, t.end - t.begin == numel * item, what, ": tensor '", name, "': shape ",
               sh->dump(), " of ", dtype_name(t.dtype), " needs ", numel * item,
               " bytes but data_offsets ", off->dump(), " span ", t.end - t.begin);
    out.push_back(std::move(t));
  }

  std::sort(out.begin(), out.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return std::pair(a.begin, a.end) < std::pair(b.begin, b.end);
  });
  const uint64_t data_size = file.size() - 8 - n;
  uint64_t expect = 0;
  for (std::size_t i = 0; i < out.size(); ++i) {
    const auto& t = out[i];
    if (t.begin < expect) {
      MQ_THROW(IoError, what, ": tensor '", t.name, "': data_offsets [", t.begin, ",", t.end,
               "] overlap tensor '", out[i - 1].name, "' [", out[i - 1].begin, ",", out[i - 1].end,
               "]");
    }
    MQ_CHECK_T(IoError, t.begin == expect, what, ": tensor '", t.name, "': data_offsets [",
               t.begin, ",", t.end, "] leave a gap after byte ", expect,
               " (offsets must be contiguous)");
    MQ_CHECK_T(IoError, t.end <= data_size, what, ": tensor '", t.name, "': data_offsets [",
               t.begin, ",", t.end, "] run past the end of the data section (", data_size,
               " bytes): truncated file");
    expect = t.end;
  }
  MQ_CHECK_T(IoError, expect == data_size, what, ": the tensors cover ", expect,
             " bytes but the data section has ", data_size, " (trailing bytes)");
  return out;
}

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  SafetensorsFile f;
  f.path_ = path;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  MQ_CHECK_T(IoError, fd >= 0, path, ": cannot open: ", errno_text());
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    auto msg = errno_text();
    ::close(fd);
    MQ_THROW(IoError, path, ": cannot stat: ", msg);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    MQ_THROW(IoError, path, ": not a regular file");
  }
  f.map_size_ = static_cast<std::size_t>(st.st_size);
  if (f.map_size_ > 0) {
    void* p = ::mmap(nullptr, f.map_size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      auto msg = errno_text();
      ::close(fd);
      MQ_THROW(IoError, path, ": cannot mmap: ", msg);
    }
    f.map_ = static_cast<const std::byte*>(p);
  }
  ::close(fd);
  // On a throw below, f's destructor unmaps.
  f.tensors_ = parse_header(std::span(f.map_, f.map_size_), path, f.metadata_, f.header_size_);
  return f;
}

SafetensorsFile::SafetensorsFile(SafetensorsFile&& o) noexcept
    : path_(std::move(o.path_)),
      map_(std::exchange(o.map_, nullptr)),
      map_size_(std::exchange(o.map_size_, 0)),
      header_size_(o.header_size_),
      tensors_(std::move(o.tensors_)),
      metadata_(std::move(o.metadata_)) {}

SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&& o) noexcept {
  if (this != &o) {
    unmap();
    path_ = std::move(o.path_);
    map_ = std::exchange(o.map_, nullptr);
    map_size_ = std::exchange(o.map_size_, 0);
    header_size_ = o.header_size_;
    tensors_ = std::move(o.tensors_);
    metadata_ = std::move(o.metadata_);
  }
  return *this;
}

SafetensorsFile::~SafetensorsFile() { unmap(); }

void SafetensorsFile::unmap() noexcept {
  if (map_ != nullptr) ::munmap(const_cast<std::byte*>(map_), map_size_);
  map_ = nullptr;
  map_size_ = 0;
}

const TensorInfo* SafetensorsFile::find(std::string_view name) const {
  for (const auto& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

const TensorInfo& SafetensorsFile::at(std::string_view name) const {
  const TensorInfo* t = find(name);
  MQ_CHECK_T(IoError, t != nullptr, path_, ": no tensor '", name, "'");
  return *t;
}

std::span<const std::byte> SafetensorsFile::data(const TensorInfo& t) const {
  return {map_ + 8 + header_size_ + t.begin, t.nbytes()};
}

std::vector<std::byte> serialize(const std::vector<TensorRef>& tensors,
                                 const std::map<std::string, std::string>& metadata) {
  Prepared p = prepare(tensors, metadata);
  std::vector<std::byte> out(8 + p.header.size() + p.data_size);
  put_u64_le(out.data(), p.header.size());
  std::memcpy(out.data() + 8, p.header.data(), p.header.size());
  std::size_t pos = 8 + p.header.size();
  for (const TensorRef* t : p.order) {
    if (!t->bytes.empty()) std::memcpy(out.data() + pos, t->bytes.data(), t->bytes.size());
    pos += t->bytes.size();
  }
  return out;
}

void write_safetensors(const std::string& path, const std::vector<TensorRef>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  Prepared p;
  try {
    p = prepare(tensors, metadata);
  } catch (const IoError& e) {
    MQ_THROW(IoError, path, ": ", e.what());
  }
  TmpFile f(path);
  std::array<std::byte, 8> len{};
  put_u64_le(len.data(), p.header.size());
  f.write(len.data(), len.size());
  f.write(p.header.data(), p.header.size());
  for (const TensorRef* t : p.order) f.write(t->bytes.data(), t->bytes.size());
  f.commit();
}

void write_file_atomic(const std::string& path, std::span<const std::byte> bytes) {
  TmpFile f(path);
  f.write(bytes.data(), bytes.size());
  f.commit();
}

}  // namespace mq::io
