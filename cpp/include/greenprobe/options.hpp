// Options passed to sensors: string key/value pairs resolved by the Python layer (arguments and
// GREENPROBE_* environment variables). Each sensor documents the keys it reads.
#pragma once

#include <initializer_list>
#include <map>
#include <set>
#include <string>

#include "greenprobe/errors.hpp"

namespace greenprobe {

class Options {
  public:
    Options() = default;
    explicit Options(std::map<std::string, std::string> values) : values_(std::move(values)) {}
    Options(std::initializer_list<std::pair<const std::string, std::string>> values) : values_(values) {}

    std::string get(const std::string& key, const std::string& fallback) const;
    double get_double(const std::string& key, double fallback) const;
    long long get_int(const std::string& key, long long fallback) const;
    bool has(const std::string& key) const {
        read_.insert(key);
        return values_.count(key) != 0;
    }
    const std::map<std::string, std::string>& values() const { return values_; }
    // Every key a get* asked for, given or not: tests check that a sensor reads only the options its
    // registry row declares. Not for concurrent use (sensors read their options while opening).
    const std::set<std::string>& keys_read() const { return read_; }

  private:
    std::map<std::string, std::string> values_;
    mutable std::set<std::string> read_;
};

}  // namespace greenprobe
