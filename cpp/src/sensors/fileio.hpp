// Small RAII helpers for the sensors' file reads: open once, pread many times.
#pragma once

#include "text.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "greenprobe/errors.hpp"

namespace greenprobe {

class Fd {
  public:
    Fd() = default;
    explicit Fd(int fd) : fd_(fd) {}
    Fd(Fd&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
    Fd& operator=(Fd&& o) noexcept {
        if (this != &o) {
            reset();
            fd_ = o.fd_;
            o.fd_ = -1;
        }
        return *this;
    }
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    ~Fd() { reset(); }

    int get() const { return fd_; }
    bool valid() const { return fd_ >= 0; }
    int release() {  // the caller owns the descriptor from now on
        const int fd = fd_;
        fd_ = -1;
        return fd;
    }
    void reset() {
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
    }

    // Opens read-only or returns the errno.
    static int open_ro(const std::string& path, Fd& out) {
        int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) return errno;
        out = Fd(fd);
        return 0;
    }

  private:
    int fd_ = -1;
};

// Reads a 64-bit little-endian register at `offset` (the MSR device's convention).
// Returns 0 on success, an errno otherwise (EIO for a short read, as the msr driver does).
inline int pread_u64(int fd, uint64_t offset, uint64_t& value) {
    uint64_t v = 0;
    ssize_t n;
    do {
        n = ::pread(fd, &v, sizeof v, static_cast<off_t>(offset));
    } while (n < 0 && errno == EINTR);
    if (n < 0) return errno;
    if (n != static_cast<ssize_t>(sizeof v)) return EIO;
    value = v;
    return 0;
}

// Reads a whole small text file from its start (sysfs style) into buf; returns errno or 0.
inline int pread_text(int fd, char* buf, std::size_t cap, std::size_t& len) {
    ssize_t n;
    do {
        n = ::pread(fd, buf, cap - 1, 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0) return errno;
    buf[n] = '\0';
    len = static_cast<std::size_t>(n);
    return 0;
}

// Integers: text::parse_integer and text::parse_unsigned (text.hpp), the one parser (parse_hex where a
// format is hex).

std::optional<std::string> read_small_file(const std::string& path, int* err = nullptr);
std::vector<std::string> list_dir(const std::string& path, int* err = nullptr);

}  // namespace greenprobe
