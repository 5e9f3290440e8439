// What the C++ tests share to build stand-ins and check errors: temporary trees of files, and the
// SensorError a call throws.
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include "greenprobe/errors.hpp"

namespace fixtures {

// The temporary trees a test process made, removed when it exits (by the process that made them: a
// forked child that exits normally leaves its parent's alone).
struct TempDirs {
    pid_t owner = ::getpid();
    std::vector<std::string> made;
    ~TempDirs() {
        if (::getpid() != owner) return;
        for (const auto& d : made) {
            std::error_code ignored;
            std::filesystem::remove_all(d, ignored);
        }
    }
};

inline TempDirs& temp_dirs() {
    static TempDirs dirs;
    return dirs;
}

// A new folder /tmp/<prefix>-XXXXXX, removed when the test process exits.
inline std::string temp_dir(const std::string& prefix = "greenprobe-test") {
    std::string tmpl = "/tmp/" + prefix + "-XXXXXX";
    const char* d = ::mkdtemp(tmpl.data());
    if (!d) throw std::runtime_error("mkdtemp failed");
    temp_dirs().made.emplace_back(d);
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
