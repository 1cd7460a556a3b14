// Strong id types shared by every module: a NodeId cannot be passed where a
// stripe number is expected.
#pragma once

#include <compare>
#include <cstdint>
#include <functional>
#include <string>

namespace fern {

struct NodeId {
  uint32_t value = 0;
  constexpr NodeId() = default;
  constexpr explicit NodeId(uint32_t v) : value(v) {}
  friend constexpr auto operator<=>(NodeId, NodeId) = default;
  std::string ToString() const { return "node " + std::to_string(value); }
};

}  // namespace fern

template <>
struct std::hash<fern::NodeId> {
  size_t operator()(fern::NodeId id) const noexcept { return std::hash<uint32_t>()(id.value); }
};
