// What the C++ tests share to build stand-ins and check errors: temporary trees of files, and the
// SensorError a call throws.
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <functional>
#include <stdexcept>
#include <string>

#include "greenprobe/errors.hpp"

namespace fixtures {

inline std::string temp_dir() {
    char tmpl[] = "/tmp/greenprobe-test-XXXXXX";
    const char* d = ::mkdtemp(tmpl);
    if (!d) throw std::runtime_error("mkdtemp failed");
    return d;
}

// mkdir -p
inline void mkdirs(const std::string& path) {
    std::string cur;
    for (std::size_t i = 0; i <= path.size(); ++i) {
        if (i == path.size() || path[i] == '/') {
            if (!cur.empty()) ::mkdir(cur.c_str(), 0755);
        }
        if (i < path.size()) cur += path[i];
    }
}

inline void write_file(const std::string& path, const std::string& text) {
    std::ofstream f(path, std::ios::trunc);
    f << text;
}

inline greenprobe::SensorError error_of(const std::function<void()>& fn) {
    try {
        fn();
    } catch (const greenprobe::SensorError& e) {
        return e;
    }
    throw std::runtime_error("no SensorError thrown");
}

inline bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

}  // namespace fixtures
