// See path.h. Everything here works on fixed buffers and touches no libc
// state, so the shim can call it while holding its lock or in a fork child.
#include "intercept/path.h"

#include <cstring>

namespace fern::intercept {

namespace {

// Appends the components of `in` to `out` (length *len, "" meaning "/"),
// resolving ".", ".." and empty components. False if out would overflow.
bool AppendComponents(const char* in, char* out, size_t* len, size_t out_size) {
  const char* p = in;
  while (*p) {
    while (*p == '/') ++p;
    if (!*p) break;
    const char* end = p;
    while (*end && *end != '/') ++end;
    const size_t n = static_cast<size_t>(end - p);
    if (n == 1 && p[0] == '.') {
      // nothing
    } else if (n == 2 && p[0] == '.' && p[1] == '.') {
      while (*len > 0 && out[*len - 1] != '/') --*len;
      if (*len > 0) --*len;  // the '/' before the dropped component
    } else {
      if (*len + 1 + n + 1 > out_size) return false;
      out[(*len)++] = '/';
      std::memcpy(out + *len, p, n);
      *len += n;
    }
    p = end;
  }
  return true;
}

}  // namespace

void ParseMounts(const char* spec, Mounts* out) {
  out->count = 0;
  if (spec == nullptr || *spec == '\0') spec = kDefaultMount;
  const char* p = spec;
  while (*p && out->count < kMaxMounts) {
    const char* end = std::strchr(p, ':');
    if (end == nullptr) end = p + std::strlen(p);
    const size_t n = static_cast<size_t>(end - p);
    char raw[kPathBuf];
    if (n > 0 && n < sizeof raw && p[0] == '/') {
      std::memcpy(raw, p, n);
      raw[n] = '\0';
      char* dst = out->prefix[out->count];
      if (Normalize(nullptr, raw, dst, kPathBuf) && std::strcmp(dst, "/") != 0) {
        out->len[out->count] = std::strlen(dst);
        ++out->count;
      }
    }
    p = *end ? end + 1 : end;
  }
}

bool Normalize(const char* base, const char* path, char* out, size_t out_size) {
  if (path == nullptr || *path == '\0' || out_size < 2) return false;
  size_t len = 0;
  if (path[0] != '/') {
    if (base == nullptr || base[0] != '/') return false;
    if (!AppendComponents(base, out, &len, out_size)) return false;
  }
  if (!AppendComponents(path, out, &len, out_size)) return false;
  if (len == 0) out[len++] = '/';
  out[len] = '\0';
  return true;
}

int Classify(const Mounts& mounts, const char* abs, const char** ns) {
  for (int i = 0; i < mounts.count; ++i) {
    const size_t n = mounts.len[i];
    if (std::strncmp(abs, mounts.prefix[i], n) != 0) continue;
    if (abs[n] == '\0') {
      *ns = "/";
      return i;
    }
    if (abs[n] == '/') {
      *ns = abs + n;
      return i;
    }
  }
  return -1;
}

bool IsPlainAbsolute(const char* path) {
  if (path[0] != '/') return false;
  if (path[1] == '\0') return true;  // the root
  const char* p = path;
  while (*p) {
    // p points at a '/': the component after it must be non-empty, not "."
    // and not "..".
    const char* c = p + 1;
    if (*c == '\0' || *c == '/') return false;
    if (c[0] == '.' && (c[1] == '\0' || c[1] == '/')) return false;
    if (c[0] == '.' && c[1] == '.' && (c[2] == '\0' || c[2] == '/')) return false;
    const char* next = std::strchr(c, '/');
    if (next == nullptr) break;
    p = next;
  }
  return true;
}

namespace {

uint64_t Fnv(uint64_t h, const char* s) {
  for (; *s; ++s) h = (h ^ static_cast<unsigned char>(*s)) * 1099511628211ull;
  return h;
}

uint64_t Finish(uint64_t h) {
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ull;
  h ^= h >> 33;
  return h == 0 ? 1 : h;
}

}  // namespace

uint64_t PathHash(const char* ns) { return Finish(Fnv(1469598103934665603ull, ns)); }

uint64_t PathHash(const char* dir_ns, const char* name) {
  uint64_t h = 1469598103934665603ull;
  if (std::strcmp(dir_ns, "/") != 0) h = Fnv(h, dir_ns);
  h = Fnv(h, "/");
  return Finish(Fnv(h, name));
}

void ParentOf(const char* ns, char* out, size_t out_size) {
  const char* slash = std::strrchr(ns, '/');
  size_t n = slash ? static_cast<size_t>(slash - ns) : 0;
  if (n == 0) {
    std::strncpy(out, "/", out_size);
    return;
  }
  if (n >= out_size) n = out_size - 1;
  std::memcpy(out, ns, n);
  out[n] = '\0';
}

}  // namespace fern::intercept
