// The named workloads of ec_bench; each parses its own flags and returns the
// process exit code (0 ok, 1 failure while running, 2 bad usage).
#pragma once

#include <string>
#include <vector>

namespace fern::bench {

int RunEncode(const std::vector<std::string>& args);
int RunTransport(const std::vector<std::string>& args);
int RunTransportServe(const std::vector<std::string>& args);
int RunCluster(const std::vector<std::string>& args);
int RunPreload(const std::vector<std::string>& args);
int RunUpdate(const std::vector<std::string>& args);
int RunReplace(const std::vector<std::string>& args);
int RunStuck(const std::vector<std::string>& args);

}  // namespace fern::bench
