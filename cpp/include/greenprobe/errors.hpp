// Sensor errors: a few categories, each with what failed, where, and how to fix it.
#pragma once

#include <stdexcept>
#include <string>

namespace greenprobe {

enum class ErrorCategory {
    Permission,      // the file or device exists but we may not read it
    LibraryMissing,  // a shared library (NVML) could not be loaded, or lacks a required symbol
    Unsupported,     // the hardware or driver does not offer this measurement
    NotFound,        // the path, device or zone does not exist
    DeviceLost,      // the device vanished while in use
    Io,              // any other read failure
    Config,          // bad option given by the user
};

const char* category_name(ErrorCategory c) noexcept;

class SensorError : public std::runtime_error {
  public:
    SensorError(ErrorCategory category, const std::string& message, std::string fix = {})
        : std::runtime_error(message), category_(category), fix_(std::move(fix)) {}

    ErrorCategory category() const noexcept { return category_; }
    const std::string& fix() const noexcept { return fix_; }

  private:
    ErrorCategory category_;
    std::string fix_;
};

// Maps an errno from open/read to a category and a fix for the given path.
SensorError errno_error(int err, const std::string& what, const std::string& path, const std::string& fix_hint);

}  // namespace greenprobe
