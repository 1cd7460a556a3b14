// JSON text helpers shared by the daemon, the CLI and ec_bench, which write
// their small JSON documents by hand.
#pragma once

#include <string>
#include <string_view>

namespace fern {

// `s` as a JSON string literal, quotes included: '"' and '\' escaped,
// control characters as \u00XX; other bytes (UTF-8 included) as they are.
std::string JsonString(std::string_view s);

}  // namespace fern
