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

  // Parses args (without the program name). "--help"/"-h" sets help_requested().
  Status Parse(const std::vector<std::string>& args);
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

  std::string usage_;
  std::vector<Flag> flags_;
  std::vector<std::string> positional_;
  bool help_ = false;
};

}  // namespace fern
