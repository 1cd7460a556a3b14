// A small command-line flag parser for fern-ec's tools.
//
// Flags are declared with a pointer to their destination, a default (the
// destination's initial value) and a help line; Parse accepts "--name value",
// "--name=value", bare "--name" for booleans, and "--" to end flags. Sizes take
// binary suffixes: 4096, 64KiB, 1MiB, 2GiB (also K/M/G and KB/MB/GB as binary
// multiples). Unknown flags, missing or malformed values are errors naming the
// flag. Positional arguments are collected in order.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace fern {

StatusOr<uint64_t> ParseSize(std::string_view text);
std::string FormatSize(uint64_t bytes);  // "1MiB", "4097B"

class FlagSet {
 public:
  explicit FlagSet(std::string usage) : usage_(std::move(usage)) {}

  void Bool(std::string name, bool* dest, std::string help);
  void Int(std::string name, int* dest, std::string help);
  void Size(std::string name, uint64_t* dest, std::string help);
  void Double(std::string name, double* dest, std::string help);
  void String(std::string name, std::string* dest, std::string help);
  // What Help() shows as the default of an added flag, where its initial
  // value is a placeholder (a default computed from other flags).
  void SetDefaultText(std::string_view name, std::string text);

  // Parses args (without the program name). "--help"/"-h" sets help_requested().
  Status Parse(const std::vector<std::string>& args);
  // Sets flags from the environment: flag "data-dir" from PREFIX + "DATA_DIR"
  // (FERN_EC_DATA_DIR for prefix "FERN_EC_"). `environ` entries starting
  // with the prefix that name no flag are errors, listed in `ignore` aside,
  // so a misspelt variable is not silently dropped. Booleans take 1/0,
  // true/false, yes/no.
  Status ParseEnv(std::string_view prefix, const std::vector<std::string>& ignore = {});
  // Sets flags from a config file: one "name = value" (or "name value") per
  // line, names as on the command line without "--", '#' starts a comment.
  // Errors name the file and line.
  Status ParseConfigFile(const std::string& path);
  // Apply in the order config file, environment, command line: the later
  // source wins. The prefix is shown in Help() (env_prefix_).
  void ShowEnvInHelp(std::string prefix) { env_prefix_ = std::move(prefix); }
  bool help_requested() const { return help_; }
  const std::vector<std::string>& positional() const { return positional_; }
  std::string Help() const;

 private:
  struct Flag {
    std::string name;
    std::string help;
    std::string default_text;
    bool is_bool = false;
    std::function<Status(std::string_view)> set;
  };
  void Add(Flag f) { flags_.push_back(std::move(f)); }
  Flag* Find(std::string_view name);
  Status SetFrom(Flag& flag, std::string_view value, const std::string& where);
  std::string env_prefix_;

  std::string usage_;
  std::vector<Flag> flags_;
  std::vector<std::string> positional_;
  bool help_ = false;
};

}  // namespace fern
