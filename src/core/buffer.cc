#include "torchless/core/buffer.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>

#include "torchless/core/error.h"

namespace torchless {
namespace {

struct Mapping {
  void* address = nullptr;
  size_t length = 0;
  ~Mapping() {
    if (address != nullptr) munmap(address, length);
  }
};

std::string errno_text() {
  return std::strerror(errno);
}

}  // namespace

Buffer Buffer::adopt(std::vector<std::byte> bytes) {
  auto owner = std::make_shared<const std::vector<std::byte>>(std::move(bytes));
  return wrap(owner, owner->data(), owner->size());
}

Buffer Buffer::adopt(std::vector<uint8_t> bytes) {
  auto owner = std::make_shared<const std::vector<uint8_t>>(std::move(bytes));
  return wrap(owner, reinterpret_cast<const std::byte*>(owner->data()), owner->size());
}

Buffer Buffer::copy_of(std::span<const std::byte> bytes) {
  return adopt(std::vector<std::byte>(bytes.begin(), bytes.end()));
}

Buffer Buffer::copy_of(std::string_view bytes) {
  return copy_of(std::as_bytes(std::span<const char>(bytes.data(), bytes.size())));
}

Buffer Buffer::wrap(std::shared_ptr<const void> owner, const std::byte* data, size_t size) {
  Buffer b;
  b.owner_ = std::move(owner);
  b.data_ = data;
  b.size_ = size;
  return b;
}

Buffer Buffer::map_file(const std::filesystem::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("{}: cannot open: {}", path.string(), errno_text());
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    auto message = errno_text();
    ::close(fd);
    fail("{}: cannot stat: {}", path.string(), message);
  }
  if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    fail("{}: is a directory, expected a file", path.string());
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return read_file(path);
  }
  Buffer b;
  if (st.st_size == 0) {
    ::close(fd);
    b.mapped_ = true;
    return b;
  }
  void* address = ::mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
  auto message = errno_text();
  ::close(fd);
  if (address == MAP_FAILED) fail("{}: cannot map: {}", path.string(), message);
  auto mapping = std::make_shared<Mapping>();
  mapping->address = address;
  mapping->length = static_cast<size_t>(st.st_size);
  b.owner_ = mapping;
  b.data_ = static_cast<const std::byte*>(address);
  b.size_ = mapping->length;
  b.mapped_ = true;
  return b;
}

Buffer Buffer::read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open for reading", path.string());
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                             std::istreambuf_iterator<char>());
  if (in.bad()) fail("{}: read error", path.string());
  return adopt(std::move(bytes));
}

Buffer Buffer::slice(uint64_t offset, uint64_t length, std::string_view what) const {
  if (offset > size_ || length > size_ - offset) {
    fail("{}: range [{}, {}+{}) lies outside the {} available bytes", what, offset, offset, length,
         size_);
  }
  Buffer b = *this;
  b.data_ = data_ + offset;
  b.size_ = static_cast<size_t>(length);
  return b;
}

void write_file_atomic(const std::filesystem::path& path, std::span<const std::byte> bytes) {
  auto dir = path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
  std::string temp_name(".");  // (not "." + string: GCC 12 warns falsely about that pattern)
  temp_name += path.filename().string();
  temp_name += ".tmp-XXXXXX";
  std::string pattern = (dir / temp_name).string();
  int fd = ::mkstemp(pattern.data());
  if (fd < 0) fail("{}: cannot create a temporary file beside it: {}", path.string(), errno_text());
  const auto* p = reinterpret_cast<const char*>(bytes.data());
  size_t left = bytes.size();
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      auto message = errno_text();
      ::close(fd);
      ::unlink(pattern.c_str());
      fail("{}: write failed: {}", path.string(), message);
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  ::fchmod(fd, 0644);
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    auto message = errno_text();
    ::unlink(pattern.c_str());
    fail("{}: cannot flush: {}", path.string(), message);
  }
  if (::rename(pattern.c_str(), path.c_str()) != 0) {
    auto message = errno_text();
    ::unlink(pattern.c_str());
    fail("{}: cannot rename temporary file into place: {}", path.string(), message);
  }
}

void write_file_atomic(const std::filesystem::path& path, std::string_view bytes) {
  write_file_atomic(path, std::as_bytes(std::span<const char>(bytes.data(), bytes.size())));
}

}  // namespace torchless
