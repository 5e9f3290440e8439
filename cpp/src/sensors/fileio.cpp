#include "fileio.hpp"

#include <dirent.h>

#include <algorithm>

namespace greenprobe {

std::optional<std::string> read_small_file(const std::string& path, int* err) {
    Fd fd;
    int e = Fd::open_ro(path, fd);
    if (e != 0) {
        if (err) *err = e;
        return std::nullopt;
    }
    std::string out;
    char buf[4096];
    for (;;) {
        ssize_t n = ::read(fd.get(), buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (err) *err = errno;
            return std::nullopt;
        }
        if (n == 0) break;
        out.append(buf, static_cast<std::size_t>(n));
        if (out.size() > (1u << 22)) break;
    }
    if (err) *err = 0;
    return out;
}

std::vector<std::string> list_dir(const std::string& path, int* err) {
    std::vector<std::string> names;
    DIR* d = ::opendir(path.c_str());
    if (!d) {
        if (err) *err = errno;
        return names;
    }
    while (dirent* e = ::readdir(d)) {
        std::string n = e->d_name;
        if (n != "." && n != "..") names.push_back(n);
    }
    ::closedir(d);
    std::sort(names.begin(), names.end());
    if (err) *err = 0;
    return names;
}

}  // namespace greenprobe
