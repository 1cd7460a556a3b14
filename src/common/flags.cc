#include "common/flags.h"

#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <fstream>
#include <cstdlib>
#include <limits>

namespace fern {

StatusOr<uint64_t> ParseSize(std::string_view text) {
  if (text.empty()) return InvalidArgumentError("empty size");
  size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
  if (digits == 0) return InvalidArgumentError("size '" + std::string(text) + "' has no number");
  std::string num(text.substr(0, digits));
  errno = 0;
  unsigned long long v = std::strtoull(num.c_str(), nullptr, 10);
  if (errno == ERANGE) return OutOfRangeError("size '" + std::string(text) + "' too large");
  std::string_view suffix = text.substr(digits);
  uint64_t mult = 1;
  if (suffix.empty() || suffix == "B") {
    mult = 1;
  } else if (suffix == "K" || suffix == "KiB" || suffix == "KB" || suffix == "k") {
    mult = uint64_t{1} << 10;
  } else if (suffix == "M" || suffix == "MiB" || suffix == "MB") {
    mult = uint64_t{1} << 20;
  } else if (suffix == "G" || suffix == "GiB" || suffix == "GB") {
    mult = uint64_t{1} << 30;
  } else if (suffix == "T" || suffix == "TiB" || suffix == "TB") {
    mult = uint64_t{1} << 40;
  } else {
    return InvalidArgumentError("size '" + std::string(text) +
                                "': unknown suffix (use B, KiB, MiB, GiB, TiB)");
  }
  if (v > std::numeric_limits<uint64_t>::max() / mult) {
    return OutOfRangeError("size '" + std::string(text) + "' too large");
  }
  return v * mult;
}

std::string FormatSize(uint64_t bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (u < 4 && bytes >= 1024 && bytes % 1024 == 0) {
    bytes /= 1024;
    ++u;
  }
  return std::to_string(bytes) + kUnits[u];
}

void FlagSet::Bool(std::string name, bool* dest, std::string help) {
  Add({name, std::move(help), *dest ? "true" : "false", true, [dest, name](std::string_view v) {
         if (v.empty() || v == "true" || v == "1" || v == "yes") {
           *dest = true;
         } else if (v == "false" || v == "0" || v == "no") {
           *dest = false;
         } else {
           return InvalidArgumentError("--" + name + ": expected true or false, got '" +
                                       std::string(v) + "'");
         }
         return Status();
       }});
}

void FlagSet::Int(std::string name, int* dest, std::string help) {
  Add({name, std::move(help), std::to_string(*dest), false, [dest, name](std::string_view v) {
         std::string s(v);
         char* end = nullptr;
         errno = 0;
         long x = std::strtol(s.c_str(), &end, 10);
         if (s.empty() || *end != '\0' || errno == ERANGE || x < std::numeric_limits<int>::min() ||
             x > std::numeric_limits<int>::max()) {
           return InvalidArgumentError("--" + name + ": expected an integer, got '" + s + "'");
         }
         *dest = static_cast<int>(x);
         return Status();
       }});
}

void FlagSet::Size(std::string name, uint64_t* dest, std::string help) {
  Add({name, std::move(help), FormatSize(*dest), false, [dest, name](std::string_view v) {
         auto s = ParseSize(v);
         if (!s.ok()) return s.status().WithContext("--" + name);
         *dest = *s;
         return Status();
       }});
}

void FlagSet::Double(std::string name, double* dest, std::string help) {
  Add({name, std::move(help), std::to_string(*dest), false, [dest, name](std::string_view v) {
         std::string s(v);
         char* end = nullptr;
         double x = std::strtod(s.c_str(), &end);
         if (s.empty() || *end != '\0') {
           return InvalidArgumentError("--" + name + ": expected a number, got '" + s + "'");
         }
         *dest = x;
         return Status();
       }});
}

void FlagSet::String(std::string name, std::string* dest, std::string help) {
  Add({name, std::move(help), *dest, false, [dest](std::string_view v) {
         *dest = std::string(v);
         return Status();
       }});
}

Status FlagSet::Parse(const std::vector<std::string>& args) {
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--") {
      positional_.insert(positional_.end(), args.begin() + i + 1, args.end());
      break;
    }
    if (a == "--help" || a == "-h") {
      help_ = true;
      continue;
    }
    if (a.size() < 3 || a[0] != '-' || a[1] != '-') {
      positional_.push_back(a);
      continue;
    }
    std::string name = a.substr(2);
    std::string value;
    bool has_value = false;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    Flag* flag = Find(name);
    if (flag == nullptr) return InvalidArgumentError("unknown flag --" + name + " (see --help)");
    if (!has_value && !flag->is_bool) {
      if (i + 1 >= args.size()) return InvalidArgumentError("--" + name + " needs a value");
      value = args[++i];
    }
    // "--switch 0" would set the switch and leave "0" as an argument: the
    // opposite of what was meant, silently.
    if (!has_value && flag->is_bool && i + 1 < args.size()) {
      const std::string& next = args[i + 1];
      if (next == "0" || next == "1" || next == "true" || next == "false" || next == "yes" || next == "no") {
        return InvalidArgumentError("--" + name + " takes no separate value: write --" + name + "=" + next);
      }
    }
    FERN_RETURN_IF_ERROR(flag->set(value));
  }
  return Status();
}

void FlagSet::SetDefaultText(std::string_view name, std::string text) {
  if (Flag* f = Find(name)) f->default_text = std::move(text);
}

FlagSet::Flag* FlagSet::Find(std::string_view name) {
  for (auto& f : flags_) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

Status FlagSet::SetFrom(Flag& flag, std::string_view value, const std::string& where) {
  std::string v(value);
  if (flag.is_bool) {
    if (v == "1" || v == "yes") v = "true";
    if (v == "0" || v == "no") v = "false";
  }
  Status s = flag.set(v);
  if (!s.ok()) return InvalidArgumentError(where + ": " + std::string(s.message()));
  return Status();
}

namespace {
std::string EnvName(std::string_view prefix, const std::string& flag) {
  std::string out(prefix);
  for (char c : flag) out += c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}
std::string Trim(std::string s) {
  const auto b = s.find_first_not_of(" \t\r");
  if (b == std::string::npos) return "";
  const auto e = s.find_last_not_of(" \t\r");
  return s.substr(b, e - b + 1);
}
}  // namespace

Status FlagSet::ParseEnv(std::string_view prefix, const std::vector<std::string>& ignore) {
  for (char** e = environ; e && *e; ++e) {
    std::string_view entry(*e);
    if (entry.substr(0, prefix.size()) != prefix) continue;
    const auto eq = entry.find('=');
    if (eq == std::string_view::npos) continue;
    const std::string var(entry.substr(0, eq));
    bool skip = false;
    for (const auto& i : ignore) skip = skip || i == var;
    if (skip) continue;
    Flag* flag = nullptr;
    for (auto& f : flags_) {
      if (EnvName(prefix, f.name) == var) flag = &f;
    }
    if (flag == nullptr) return InvalidArgumentError("environment variable " + var + " names no flag (see --help)");
    FERN_RETURN_IF_ERROR(SetFrom(*flag, entry.substr(eq + 1), var));
  }
  return Status();
}

Status FlagSet::ParseConfigFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return NotFoundError("cannot read config file " + path);
  std::string line;
  for (int lineno = 1; std::getline(in, line); ++lineno) {
    // '#' starts a comment at the start of a line or after a blank, so a
    // value such as /scratch/run#3 stays whole.
    for (size_t hash = line.find('#'); hash != std::string::npos; hash = line.find('#', hash + 1)) {
      if (hash == 0 || line[hash - 1] == ' ' || line[hash - 1] == '\t') {
        line.resize(hash);
        break;
      }
    }
    line = Trim(line);
    if (line.empty()) continue;
    const auto sep = line.find_first_of("= \t");
    const std::string where = path + ":" + std::to_string(lineno);
    std::string name = Trim(line.substr(0, sep));
    std::string value = sep == std::string::npos ? "" : Trim(line.substr(sep));
    if (!value.empty() && value[0] == '=') value = Trim(value.substr(1));
    if (name.rfind("--", 0) == 0) name = name.substr(2);
    Flag* flag = Find(name);
    if (flag == nullptr) return InvalidArgumentError(where + ": unknown setting '" + name + "' (see --help)");
    if (value.empty() && flag->is_bool) value = "true";
    if (value.empty()) return InvalidArgumentError(where + ": '" + name + "' needs a value");
    FERN_RETURN_IF_ERROR(SetFrom(*flag, value, where));
  }
  return Status();
}

std::string FlagSet::Help() const {
  std::string out = usage_ + "\n\nFlags:\n";
  for (const auto& f : flags_) {
    std::string left = "  --" + f.name + (f.is_bool ? "" : " VALUE");
    if (left.size() < 28) left.resize(28, ' ');
    out += left + " " + f.help;
    if (!f.default_text.empty()) out += " (default: " + f.default_text + ")";
    if (!env_prefix_.empty()) out += " [" + EnvName(env_prefix_, f.name) + "]";
    out += "\n";
  }
  std::string help = "  --help";
  help.resize(28, ' ');
  out += help + " print this help and exit\n";
  return out;
}

}  // namespace fern
