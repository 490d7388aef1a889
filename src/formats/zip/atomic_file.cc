#include "formats/zip/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "torchless/core/error.h"

namespace torchless::formats {
namespace {

constexpr size_t kBufferSize = size_t{1} << 20;

}  // namespace

AtomicFile::AtomicFile(std::filesystem::path path) : path_(std::move(path)) {
  auto dir = path_.has_parent_path() ? path_.parent_path() : std::filesystem::path(".");
  std::string temp_name(".");
  temp_name += path_.filename().string();
  temp_name += ".tmp-XXXXXX";
  temp_path_ = (dir / temp_name).string();
  fd_ = ::mkstemp(temp_path_.data());
  if (fd_ < 0) {
    temp_path_.clear();
    fail("{}: cannot create a temporary file beside it: {}", path_.string(), std::strerror(errno));
  }
}

AtomicFile::AtomicFile(AtomicFile&& other) noexcept
    : path_(std::move(other.path_)),
      temp_path_(std::move(other.temp_path_)),
      fd_(other.fd_),
      pending_(std::move(other.pending_)),
      written_(other.written_) {
  other.fd_ = -1;
  other.temp_path_.clear();
}

AtomicFile::~AtomicFile() {
  discard();
}

void AtomicFile::write_all(const std::byte* data, size_t size) {
  if (fd_ < 0) fail("{}: write after commit", path_.string());
  const auto* p = reinterpret_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = ::write(fd_, p, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("{}: write failed: {}", path_.string(), std::strerror(errno));
    }
    p += n;
    size -= static_cast<size_t>(n);
  }
}

void AtomicFile::flush() {
  write_all(pending_.data(), pending_.size());
  pending_.clear();
}

void AtomicFile::write(std::span<const std::byte> bytes) {
  if (bytes.size() >= kBufferSize) {
    flush();
    write_all(bytes.data(), bytes.size());  // large blocks go straight from the caller's bytes
  } else {
    pending_.insert(pending_.end(), bytes.begin(), bytes.end());
    if (pending_.size() >= kBufferSize) flush();
  }
  written_ += bytes.size();
}

void AtomicFile::commit() {
  flush();
  ::fchmod(fd_, 0644);
  if (::fsync(fd_) != 0) fail("{}: cannot flush: {}", path_.string(), std::strerror(errno));
  int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) fail("{}: cannot close: {}", path_.string(), std::strerror(errno));
  if (::rename(temp_path_.c_str(), path_.c_str()) != 0) {
    fail("{}: cannot rename temporary file into place: {}", path_.string(), std::strerror(errno));
  }
  temp_path_.clear();
}

void AtomicFile::discard() noexcept {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  if (!temp_path_.empty()) {
    ::unlink(temp_path_.c_str());
    temp_path_.clear();
  }
}

}  // namespace torchless::formats
