#include "common/clock.h"

namespace fern {

RealClock* RealClock::Get() {
  static RealClock clock;
  return &clock;
}

}  // namespace fern
