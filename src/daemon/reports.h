// Text and JSON renderings of the reports a Node produces for the CLI
// (`fern-ec inspect`, `fern-ec scrub`); the daemon sends them as is.
// Pure functions: no I/O, nothing kept.
#pragma once

#include <string>

#include "daemon/node.h"

namespace fern::daemon {

// One JSON object: version, layout, and per stripe its health ("healthy",
// "degraded" or "lost") and each shard's node, state ("ok", "missing",
// "corrupt", "down" or "unreachable") and, when ok, length, CRC32C and seq.
std::string InspectJson(const Node::Inspection& in);
// A summary line, then one line per stripe: D0@node:crc ... P1@node:state.
std::string InspectText(const Node::Inspection& in);

// One JSON object with the counts and one string per problem.
std::string ScrubJson(const Node::ScrubReport& r);
// A summary line, then the problems, indented.
std::string ScrubText(const Node::ScrubReport& r);

}  // namespace fern::daemon
