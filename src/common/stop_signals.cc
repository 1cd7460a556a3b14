#include "common/stop_signals.h"

#include <signal.h>
#include <sys/signalfd.h>

#include <cerrno>

namespace fern {

StatusOr<int> StopSignalFd() {
  sigset_t mask;
  sigemptyset(&mask);
  for (int sig : {SIGTERM, SIGINT}) {
    signal(sig, SIG_DFL);
    sigaddset(&mask, sig);
  }
  if (sigprocmask(SIG_BLOCK, &mask, nullptr) != 0) return FromErrno(errno, "block SIGTERM and SIGINT");
  const int fd = signalfd(-1, &mask, SFD_CLOEXEC);
  if (fd < 0) return FromErrno(errno, "signalfd for SIGTERM and SIGINT");
  return fd;
}

}  // namespace fern
