#include "tfops/store_files.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "tfops/dyn_errors.h"
#include "tfops/dynamic_table.h"

namespace rs {
namespace tfops {
namespace {

std::vector<std::string> ListDir(const std::string& p) {
  std::vector<std::string> out;
  DIR* d = ::opendir(p.c_str());
  if (!d) Fail("cannot list " + p + ": " + std::strerror(errno));
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") out.push_back(n);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

void CopyFile(const std::string& src, const std::string& dst) {
  int in = ::open(src.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0) Fail("open " + src + ": " + std::strerror(errno));
  int out = ::open(dst.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (out < 0) {
    ::close(in);
    Fail("create " + dst + ": " + std::strerror(errno));
  }
  std::vector<char> buf(1 << 20);
  bool ok = true;
  for (;;) {
    ssize_t r = ::read(in, buf.data(), buf.size());
    if (r < 0) { ok = false; break; }
    if (r == 0) break;
    for (ssize_t off = 0; off < r;) {
      ssize_t w = ::write(out, buf.data() + off, static_cast<size_t>(r - off));
      if (w <= 0) { ok = false; break; }
      off += w;
    }
    if (!ok) break;
  }
  if (ok && ::fsync(out) != 0) ok = false;
  ::close(in);
  if (::close(out) != 0) ok = false;
  if (!ok) Fail("copy " + src + " -> " + dst + " failed: " + std::strerror(errno));
}

// Data files as hard links (append-only: a cleanly closed file never changes
// again, see tfops/dynamic_table.h), copies where a link is impossible; the
// MANIFEST copied, the LOCK skipped.
void CloneTree(const std::string& src, const std::string& dst) {
  MakeDirs(dst);
  for (const auto& n : ListDir(src)) {
    const std::string s = src + "/" + n, d = dst + "/" + n;
    if (IsDir(s)) {
      CloneTree(s, d);
    } else if (n == "LOCK") {
      continue;
    } else if (n == "MANIFEST") {
      CopyFile(s, d);
    } else if (::link(s.c_str(), d.c_str()) != 0) {
      if (errno == EXDEV || errno == EPERM || errno == EMLINK) CopyFile(s, d);
      else Fail("link " + s + " -> " + d + ": " + std::strerror(errno));
    }
  }
  SyncPath(dst);
}

}  // namespace

bool IsDir(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

void MakeDirs(const std::string& p) {
  if (p.empty() || IsDir(p)) return;
  auto slash = p.find_last_of('/');
  if (slash != std::string::npos && slash > 0) MakeDirs(p.substr(0, slash));
  if (::mkdir(p.c_str(), 0755) != 0 && errno != EEXIST)
    Fail("mkdir " + p + ": " + std::strerror(errno));
}

void RemoveTree(const std::string& p) {
  struct stat st;
  if (::lstat(p.c_str(), &st) != 0) return;
  if (S_ISDIR(st.st_mode)) {
    for (const auto& n : ListDir(p)) RemoveTree(p + "/" + n);
    if (::rmdir(p.c_str()) != 0) Fail("rmdir " + p + ": " + std::strerror(errno));
  } else if (::unlink(p.c_str()) != 0) {
    Fail("unlink " + p + ": " + std::strerror(errno));
  }
}

void SyncPath(const std::string& p) {
  int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

void CloneStoreDir(const std::string& src, const std::string& dst) {
  if (!IsDir(src)) Fail("store snapshot " + src + " is missing");
  struct stat st;
  if (::stat((src + "/MANIFEST").c_str(), &st) != 0) Fail("store snapshot " + src + " has no MANIFEST");
  CloneTree(src, dst);
}

}  // namespace tfops
}  // namespace rs
