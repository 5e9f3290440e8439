// Small text helpers the sensors share: sysfs files, option values and environment lists.
#pragma once

#include <cctype>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

namespace greenprobe::text {

// Without leading and trailing blanks (space, tab, CR, LF).
inline std::string trim(const std::string& s) {
    const auto b = s.find_first_not_of(" \t\r\n");
    if (b == std::string::npos) return {};
    return s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1);
}

// "a, b,,c" -> {"a", "b", "", "c"}: every entry trimmed, empty ones kept (callers decide).
inline std::vector<std::string> split(const std::string& s, char sep = ',') {
    std::vector<std::string> out;
    std::string::size_type start = 0;
    while (true) {
        const auto end = s.find(sep, start);
        out.push_back(trim(s.substr(start, end == std::string::npos ? std::string::npos : end - start)));
        if (end == std::string::npos) return out;
        start = end + 1;
    }
}

// The one integer parser: a decimal integer as sysfs files and options write it. Blanks (space,
// tab, CR, LF) around it are allowed, a sign only where signed, never octal or hex, no overflow;
// false for anything else (and `v` untouched). Every integer the core reads from a file, a name
// or an option goes through these (parse_hex below only where the format is hex).
inline bool parse_integer(const char* s, long long& v) {
    while (*s == ' ' || *s == '\t') ++s;
    const char* digits = (*s == '-' || *s == '+') ? s + 1 : s;
    if (*digits < '0' || *digits > '9') return false;
    char* end = nullptr;
    errno = 0;
    const long long parsed = std::strtoll(s, &end, 10);
    if (errno != 0) return false;
    while (*end == ' ' || *end == '\n' || *end == '\r' || *end == '\t') ++end;
    if (*end != '\0') return false;
    v = parsed;
    return true;
}
inline bool parse_integer(const std::string& s, long long& v) { return parse_integer(s.c_str(), v); }

inline bool parse_unsigned(const char* s, uint64_t& v) {
    while (*s == ' ' || *s == '\t') ++s;
    if (*s < '0' || *s > '9') return false;
    char* end = nullptr;
    errno = 0;
    const unsigned long long parsed = std::strtoull(s, &end, 10);
    if (errno != 0) return false;
    while (*end == ' ' || *end == '\n' || *end == '\r' || *end == '\t') ++end;
    if (*end != '\0') return false;
    v = parsed;
    return true;
}
inline bool parse_unsigned(const std::string& s, uint64_t& v) { return parse_unsigned(s.c_str(), v); }

// parse_integer into an int: false also where the value does not fit one.
inline bool parse_integer(const char* s, int& v) {
    long long wide = 0;
    if (!parse_integer(s, wide) || wide < INT_MIN || wide > INT_MAX) return false;
    v = static_cast<int>(wide);
    return true;
}
inline bool parse_integer(const std::string& s, int& v) { return parse_integer(s.c_str(), v); }

// The same rules for the few values written in hex (a capability mask, a perf event's config):
// hex digits, with an optional 0x before them, blanks around; no sign, no overflow.
inline bool parse_hex(const char* s, uint64_t& v) {
    while (*s == ' ' || *s == '\t') ++s;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) s += 2;
    uint64_t parsed = 0;
    const char* end = s;
    for (;; ++end) {
        const char c = *end;
        const int digit = c >= '0' && c <= '9'   ? c - '0'
                          : c >= 'a' && c <= 'f' ? c - 'a' + 10
                          : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                                 : -1;
        if (digit < 0) break;
        if (parsed >> 60) return false;  // a 17th significant digit: overflow
        parsed = parsed << 4 | static_cast<uint64_t>(digit);
    }
    if (end == s) return false;
    while (*end == ' ' || *end == '\n' || *end == '\r' || *end == '\t') ++end;
    if (*end != '\0') return false;
    v = parsed;
    return true;
}
inline bool parse_hex(const std::string& s, uint64_t& v) { return parse_hex(s.c_str(), v); }

inline std::string lower(std::string s) {
    for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

}  // namespace greenprobe::text
