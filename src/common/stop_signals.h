// StopSignalFd: SIGTERM and SIGINT as a readable descriptor, for a server's
// poll or epoll set (fern-ec-daemon, the tests' fake daemon).
//
// Resets both to their default disposition (an inherited SIG_IGN, as `sh`
// gives a background job for SIGINT, would discard them), blocks them in the
// calling thread, and returns a close-on-exec signalfd that becomes readable
// when one arrives; read a signalfd_siginfo from it to consume it. Unlike a
// handler setting a flag, nothing is lost when a sanitizer defers signals.
//
// REQUIRES: called before the process starts other threads, so that every
// thread inherits the blocked mask.
#pragma once

#include "common/status.h"

namespace fern {

StatusOr<int> StopSignalFd();

}  // namespace fern
