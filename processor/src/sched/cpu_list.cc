#include "sched/cpu_list.h"

#include <sched.h>

#include <algorithm>
#include <cstdlib>

#include "base/status.h"

namespace rs {

namespace {
constexpr int kMaxCpu = 4096;

int ParseId(const std::string& token, const std::string& whole, const char* what) {
  if (token.empty() || token.size() > 4 || token.find_first_not_of("0123456789") != std::string::npos)
    Fail(RS_ERR_INVALID_ARGUMENT, std::string(what) + ": malformed cpu list \"" + whole + "\" (expected e.g. \"0-3,8\")");
  int id = std::atoi(token.c_str());
  if (id >= kMaxCpu) Fail(RS_ERR_INVALID_ARGUMENT, std::string(what) + ": cpu id " + token + " is too large");
  return id;
}

std::string Strip(const std::string& s) {
  size_t b = s.find_first_not_of(" \t"), e = s.find_last_not_of(" \t");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}
}  // namespace

std::vector<int> ParseCpuList(const std::string& text, const char* what) {
  std::vector<int> out;
  std::string whole = Strip(text);
  if (whole.empty()) return out;
  size_t start = 0;
  while (start <= whole.size()) {
    size_t comma = whole.find(',', start);
    std::string item = Strip(whole.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    size_t dash = item.find('-');
    if (dash == std::string::npos) {
      out.push_back(ParseId(item, whole, what));
    } else {
      int lo = ParseId(Strip(item.substr(0, dash)), whole, what);
      int hi = ParseId(Strip(item.substr(dash + 1)), whole, what);
      if (lo > hi) Fail(RS_ERR_INVALID_ARGUMENT, std::string(what) + ": empty cpu range \"" + item + "\"");
      for (int c = lo; c <= hi; ++c) out.push_back(c);
    }
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

std::string FormatCpuList(const std::vector<int>& cpus) {
  std::string out;
  for (size_t i = 0; i < cpus.size();) {
    size_t j = i;
    while (j + 1 < cpus.size() && cpus[j + 1] == cpus[j] + 1) ++j;
    if (!out.empty()) out += ',';
    out += std::to_string(cpus[i]);
    if (j > i) out += '-' + std::to_string(cpus[j]);
    i = j + 1;
  }
  return out;
}

std::vector<int> AllowedCpus() {
  std::vector<int> out;
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return out;
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &set)) out.push_back(c);
  return out;
}

}  // namespace rs
