#include "store/data_file.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include "base/status.h"

namespace rs {
namespace store {
namespace {

[[noreturn]] void IoFail(const std::string& what, const std::string& path) {
  Fail(RS_ERR_IO, what + " " + path + ": " + std::strerror(errno));
}

uint64_t PageRound(uint64_t n) {
  uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  return (n + page - 1) / page * page;
}

}  // namespace

void SyncDir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) IoFail("open dir", dir);
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) IoFail("fsync dir", dir);
}

void DataFile::Map(uint64_t len) {
  if (!use_mmap_ || len == 0) return;
  len = PageRound(len);
  void* p = ::mmap(nullptr, len, PROT_READ, MAP_SHARED, fd_, 0);
  if (p == MAP_FAILED) IoFail("mmap", path_);
  map_ = static_cast<char*>(p);
  map_len_ = len;
}

std::unique_ptr<DataFile> DataFile::Create(const std::string& path, const FileHeader& header,
                                           uint64_t map_capacity, bool use_mmap, bool sync) {
  std::unique_ptr<DataFile> f(new DataFile);
  f->path_ = path;
  f->header_ = header;
  f->use_mmap_ = use_mmap;
  f->fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (f->fd_ < 0) IoFail("create", path);
  FileHeader h = header;
  std::memcpy(h.magic, kFileMagic, 8);
  h.crc = Crc32c(&h, kFileHeaderSize - 4);
  f->header_ = h;
  f->Append(reinterpret_cast<const char*>(&h), sizeof(h));
  if (sync) f->Sync();
  f->Map(map_capacity);
  return f;
}

std::unique_ptr<DataFile> DataFile::Open(const std::string& path, bool use_mmap) {
  std::unique_ptr<DataFile> f(new DataFile);
  f->path_ = path;
  f->use_mmap_ = use_mmap;
  f->fd_ = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (f->fd_ < 0) IoFail("open", path);
  struct stat st;
  if (::fstat(f->fd_, &st) != 0) IoFail("stat", path);
  uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < kFileHeaderSize) return nullptr;
  FileHeader h;
  ssize_t got = ::pread(f->fd_, &h, sizeof(h), 0);
  if (got != static_cast<ssize_t>(sizeof(h))) IoFail("read header", path);
  if (std::memcmp(h.magic, kFileMagic, 8) != 0) {
    Fail(RS_ERR_CORRUPTION, "not a recstrata store data file (bad magic at offset 0): " + path);
  }
  if (Crc32c(&h, kFileHeaderSize - 4) != h.crc) {
    Fail(RS_ERR_CORRUPTION, "data file header checksum mismatch: " + path + " at offset 0");
  }
  if (h.format_version != kFormatVersion) {
    Fail(RS_ERR_INCOMPATIBLE, "data file " + path + " has format version " +
                                  std::to_string(h.format_version) + ", this library reads " +
                                  std::to_string(kFormatVersion));
  }
  f->header_ = h;
  f->size_.store(size);
  f->Map(size);
  return f;
}

DataFile::~DataFile() {
  if (map_) ::munmap(map_, map_len_);
  if (fd_ >= 0) ::close(fd_);
  if (unlink_on_close_) ::unlink(path_.c_str());
}

const char* DataFile::RecordPtr(uint64_t offset, uint32_t record_size, char* scratch) const {
  if (offset + record_size > size()) return nullptr;
  if (map_ && offset + record_size <= map_len_) return map_ + offset;
  uint64_t done = 0;
  while (done < record_size) {
    ssize_t n = ::pread(fd_, scratch + done, record_size - done, static_cast<off_t>(offset + done));
    if (n <= 0) {
      if (n < 0 && errno == EINTR) continue;
      return nullptr;
    }
    done += static_cast<uint64_t>(n);
  }
  return scratch;
}

bool DataFile::ReadAt(uint64_t offset, uint64_t n, char* out) const {
  if (offset + n > size()) return false;
  uint64_t done = 0;
  while (done < n) {
    ssize_t r = ::pread(fd_, out + done, n - done, static_cast<off_t>(offset + done));
    if (r <= 0) {
      if (r < 0 && errno == EINTR) continue;
      return false;
    }
    done += static_cast<uint64_t>(r);
  }
  return true;
}

void DataFile::WriteAt(uint64_t offset, const char* data, size_t n) {
  dirty = true;
  if (offset == crc_len) {
    crc = ExtendCrc32c(crc, data, n);
    crc_len += n;
  } else if (offset < crc_len) {
    crc_len = 0;  // rewritten bytes: unknown until recomputed
    crc = 0;
  }
  size_t done = 0;
  while (done < n) {
    ssize_t w = ::pwrite(fd_, data + done, n - done, static_cast<off_t>(offset + done));
    if (w < 0) {
      if (errno == EINTR) continue;
      IoFail("write", path_);
    }
    done += static_cast<size_t>(w);
  }
}

void DataFile::Append(const char* data, size_t n) {
  uint64_t at = size();
  WriteAt(at, data, n);
  SetSize(at + n);
}

void DataFile::Sync() {
  if (::fdatasync(fd_) != 0) IoFail("fdatasync", path_);
  dirty = false;
}

uint64_t DataFile::DiskSize() const {
  struct stat st;
  if (::fstat(fd_, &st) != 0) IoFail("stat", path_);
  return static_cast<uint64_t>(st.st_size);
}

void DataFile::Truncate(uint64_t n) {
  if (n < crc_len) {
    crc_len = 0;
    crc = 0;
  }
  if (::ftruncate(fd_, static_cast<off_t>(n)) != 0) IoFail("truncate", path_);
  Sync();
  SetSize(n);
}

void DataFile::Rename(const std::string& new_path) {
  if (::rename(path_.c_str(), new_path.c_str()) != 0) IoFail("rename", path_);
  path_ = new_path;
}

void DataFile::UnlinkNow() {
  if (::unlink(path_.c_str()) != 0 && errno != ENOENT) IoFail("unlink", path_);
}

}  // namespace store
}  // namespace rs
