// Small text helpers the sensors share: sysfs files, option values and environment lists.
#pragma once

#include <cctype>
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

// "-?[0-9]+" of at most 18 characters -> value; false for anything else.
inline bool parse_integer(const std::string& s, long long& v) {
    if (s.empty() || s.size() > 18) return false;
    const std::size_t first = s[0] == '-' ? 1 : 0;
    if (first == s.size()) return false;
    for (std::size_t i = first; i < s.size(); ++i) {
        if (s[i] < '0' || s[i] > '9') return false;
    }
    v = std::strtoll(s.c_str(), nullptr, 10);
    return true;
}

inline std::string lower(std::string s) {
    for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

}  // namespace greenprobe::text
