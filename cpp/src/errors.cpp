#include "greenprobe/errors.hpp"

#include <cerrno>
#include <cstring>

#include "greenprobe/options.hpp"
#include "sensors/text.hpp"

namespace greenprobe {

const char* category_name(ErrorCategory c) noexcept {
    switch (c) {
        case ErrorCategory::Permission: return "permission";
        case ErrorCategory::LibraryMissing: return "library-missing";
        case ErrorCategory::Unsupported: return "unsupported";
        case ErrorCategory::NotFound: return "not-found";
        case ErrorCategory::DeviceLost: return "device-lost";
        case ErrorCategory::Io: return "io";
        case ErrorCategory::Config: return "config";
    }
    return "io";
}

SensorError errno_error(int err, const std::string& what, const std::string& path, const std::string& fix_hint) {
    std::string message = what + ": " + path + ": " + std::strerror(err);
    switch (err) {
        case EACCES:
        case EPERM:
            return SensorError(ErrorCategory::Permission, message, fix_hint);
        case ENOENT:
        case ENOTDIR:
        case ENXIO:
        case ENODEV:
            return SensorError(ErrorCategory::NotFound, message, fix_hint);
        case EIO:
            return SensorError(ErrorCategory::Unsupported, message, fix_hint);
        default:
            return SensorError(ErrorCategory::Io, message, fix_hint);
    }
}

std::string Options::get(const std::string& key, const std::string& fallback) const {
    read_.insert(key);
    auto it = values_.find(key);
    return it == values_.end() || it->second.empty() ? fallback : it->second;
}

double Options::get_double(const std::string& key, double fallback) const {
    read_.insert(key);
    auto it = values_.find(key);
    if (it == values_.end() || it->second.empty()) return fallback;
    try {
        std::size_t used = 0;
        double v = std::stod(it->second, &used);
        if (used != it->second.size()) throw std::invalid_argument("trailing characters");
        return v;
    } catch (const std::exception&) {
        throw SensorError(ErrorCategory::Config, "option " + key + "=" + it->second + " is not a number",
                          "give " + key + " as a decimal number");
    }
}

long long Options::get_int(const std::string& key, long long fallback) const {
    read_.insert(key);
    auto it = values_.find(key);
    if (it == values_.end() || it->second.empty()) return fallback;
    long long v = 0;
    if (!text::parse_integer(it->second, v)) {  // decimal only: "010" is ten, "0x10" is refused
        throw SensorError(ErrorCategory::Config, "option " + key + "=" + it->second + " is not a decimal integer",
                          "give " + key + " as a decimal integer (digits, optionally signed; no 0x or leading-zero octal)");
    }
    return v;
}

}  // namespace greenprobe
