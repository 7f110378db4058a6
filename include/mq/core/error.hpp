#pragma once
/// Errors inside mqdist are exceptions. Use
///   MQ_CHECK(cond, "what went wrong: ", value, ...)  for user input / preconditions (throws mq::Error)
///   MQ_ASSERT(cond)                                   for internal invariants (throws mq::InternalError)
/// Subclasses name the area so callers (and main()) can tell a bad config from a bad file.
#include <sstream>
#include <stdexcept>
#include <string>

namespace mq {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};
/// A config that breaks a rule. what() is "<file>: <json path>: <rule>" when the file is known.
class ConfigError : public Error {
 public:
  using Error::Error;
};
/// A file that cannot be read or written, or whose contents are malformed.
class IoError : public Error {
 public:
  using Error::Error;
};
class InternalError : public Error {
 public:
  using Error::Error;
};

namespace detail {
template <typename... Args>
std::string cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

}  // namespace mq

#define MQ_THROW(ErrorType, ...) throw ErrorType(::mq::detail::cat(__VA_ARGS__))

#define MQ_CHECK(cond, ...)                                          \
  do {                                                               \
    if (!(cond)) MQ_THROW(::mq::Error, __VA_ARGS__);                 \
  } while (0)

#define MQ_CHECK_T(ErrorType, cond, ...)                             \
  do {                                                               \
    if (!(cond)) MQ_THROW(ErrorType, __VA_ARGS__);                   \
  } while (0)

#define MQ_ASSERT(cond)                                                                     \
  do {                                                                                      \
    if (!(cond))                                                                            \
      MQ_THROW(::mq::InternalError, __FILE__, ":", __LINE__, ": internal error: ", #cond); \
  } while (0)
