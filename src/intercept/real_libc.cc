// See real_libc.h. Resolution happens once, under pthread_once, the first time
// any wrapper needs it; dlsym(RTLD_NEXT) finds the next definition after
// ours in the lookup order, i.e. libc's.
#include "intercept/real_libc.h"

#include <dlfcn.h>
#include <pthread.h>

namespace fern::intercept {

namespace {

RealLibc g_real;
pthread_once_t g_once = PTHREAD_ONCE_INIT;
bool g_resolved = false;

void ResolveAll() {
#define FERN_REAL_RESOLVE(name, ret, args) \
  g_real.name = reinterpret_cast<ret(*) args>(dlsym(RTLD_NEXT, #name));
  FERN_REAL_FUNCTIONS(FERN_REAL_RESOLVE)
#undef FERN_REAL_RESOLVE
  __atomic_store_n(&g_resolved, true, __ATOMIC_RELEASE);
}

}  // namespace

const RealLibc& Real() {
  if (!__atomic_load_n(&g_resolved, __ATOMIC_ACQUIRE)) pthread_once(&g_once, ResolveAll);
  return g_real;
}

}  // namespace fern::intercept
