// The pure part of the hwmon sensor: attribute names, domain names, PCI addresses and what a failed
// read means. No I/O here (hwmon.cpp does the reads); tested directly in tests/cpp/test_hwmon.cpp.
#pragma once

#include <cerrno>
#include <string>
#include <utility>

#include "greenprobe/sensor.hpp"
#include "text.hpp"

namespace greenprobe {
namespace hwmon {

// One attribute file of a chip, sysfs-interface.rst's "<type><N>_<item>": "power1_average_interval"
// is {type "power", index 1, item "average_interval"}. False for anything else ("name", "device",
// "update_interval", "uevent").
struct AttrName {
    std::string type;
    int index = 0;
    std::string item;
};

inline bool parse_attr(const std::string& file, AttrName& out) {
    std::size_t i = 0;
    while (i < file.size() && file[i] >= 'a' && file[i] <= 'z') ++i;
    const std::size_t digits = i;
    while (i < file.size() && file[i] >= '0' && file[i] <= '9') ++i;
    if (digits == 0 || i == digits || i - digits > 6 || i >= file.size() || file[i] != '_' || i + 1 == file.size()) {
        return false;
    }
    int index = 0;
    if (!text::parse_integer(file.substr(digits, i - digits), index)) return false;
    out.type = file.substr(0, digits);
    out.index = index;
    out.item = file.substr(i + 1);
    return true;
}

// "hwmon12" -> 12; -1 for anything else.
inline int hwmon_index(const std::string& dir) {
    if (dir.compare(0, 5, "hwmon") != 0 || dir.size() == 5 || dir.size() > 12) return -1;
    for (std::size_t i = 5; i < dir.size(); ++i) {
        if (dir[i] < '0' || dir[i] > '9') return -1;
    }
    int index = -1;
    return text::parse_integer(dir.c_str() + 5, index) ? index : -1;
}

// Lower case; letters, digits and '_' kept; every other run of characters becomes one '-', none at
// either end: "Esocket0" -> "esocket0", "VDD_CPU GPU CV" -> "vdd_cpu-gpu-cv".
inline std::string sanitise(const std::string& s) {
    std::string out;
    bool dash = false;
    for (char c : s) {
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
        if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_') {
            if (dash && !out.empty()) out += '-';
            dash = false;
            out += c;
        } else {
            dash = true;
        }
    }
    return out;
}

// What an NVIDIA Grace ACPI power meter measures, from its power1_oem_info text ("Module Power
// Socket 0", "Grace Power Socket 1", "CPU Power Socket 0", "SysIO Power Socket 0"; case, spaces and
// punctuation are not significant). Module: the whole Grace Hopper superchip (Grace, Hopper, memory,
// regulator loss); Grace: the Grace socket, which holds CPU (the CPU rail) and SysIO (the SoC rail).
// Kind None for any other text (socket -1).
enum class GraceMeter : uint8_t { None, Module, Grace, Cpu, SysIO };

struct GraceOem {
    GraceMeter kind = GraceMeter::None;
    int socket = -1;
};

inline GraceOem parse_grace_oem(const std::string& oem_info) {
    const std::string s = sanitise(oem_info);  // "cpu-power-socket-0"
    static const std::pair<const char*, GraceMeter> kinds[] = {
        {"module", GraceMeter::Module}, {"grace", GraceMeter::Grace}, {"cpu", GraceMeter::Cpu}, {"sysio", GraceMeter::SysIO}};
    for (const auto& [word, kind] : kinds) {
        const std::string prefix = std::string(word) + "-power-socket-";
        if (s.compare(0, prefix.size(), prefix) != 0 || s.size() == prefix.size() || s.size() > prefix.size() + 4) continue;
        bool digits = true;
        for (std::size_t i = prefix.size(); i < s.size(); ++i) digits = digits && s[i] >= '0' && s[i] <= '9';
        int socket = -1;
        if (digits && text::parse_integer(s.c_str() + prefix.size(), socket)) return GraceOem{kind, socket};
    }
    return {};
}

// The domain of a Grace meter: grace-module-<socket>, grace-socket-<socket>, grace-cpu-<socket>,
// grace-sysio-<socket>; "" for None.
inline std::string grace_domain(GraceMeter kind, int socket) {
    const char* part = kind == GraceMeter::Module  ? "module"
                       : kind == GraceMeter::Grace ? "socket"
                       : kind == GraceMeter::Cpu   ? "cpu"
                       : kind == GraceMeter::SysIO ? "sysio"
                                                   : nullptr;
    return part ? "grace-" + std::string(part) + "-" + std::to_string(socket) : std::string();
}

// A PCI address as sysfs names the device: "0000:03:00.0" (domain of 4 to 8 hex digits).
inline bool is_pci_address(const std::string& s) {
    auto hex = [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); };
    const std::size_t colon = s.find(':');
    if (colon == std::string::npos || colon < 4 || colon > 8) return false;
    if (s.size() != colon + 8) return false;  // ":bb:dd.f"
    for (std::size_t i = 0; i < colon; ++i) {
        if (!hex(s[i])) return false;
    }
    const std::string rest = s.substr(colon);
    return rest[0] == ':' && hex(rest[1]) && hex(rest[2]) && rest[3] == ':' && hex(rest[4]) && hex(rest[5]) &&
           rest[6] == '.' && rest[7] >= '0' && rest[7] <= '7';
}

// What a failed read of an open attribute file means. The chip disappeared (hot-unplug, driver
// unbound or unloaded: sysfs then answers ENODEV on an open file; ENOENT/ENXIO where a path had to
// be resolved): the channel is gone. Anything else is taken as passing: EAGAIN/EBUSY/EIO from a busy
// bus or firmware, EPERM from amdgpu while the GPU is in reset or runtime-suspended, ENODATA from a
// channel switched off for a while.
inline PollStatus status_of_read_errno(int err) {
    return (err == ENODEV || err == ENOENT || err == ENXIO) ? PollStatus::Gone : PollStatus::Retry;
}

}  // namespace hwmon
}  // namespace greenprobe
