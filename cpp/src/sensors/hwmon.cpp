// hwmon: energy counters and power readings of the kernel's hardware-monitoring chips,
// /sys/class/hwmon/hwmon<N>/ (Documentation/hwmon/sysfs-interface.rst).
//
// Per chip: a `name` file; energy<N>_input (cumulative µJ: Intel GPUs under i915 >= 6.2 and xe,
// AMD CPUs under amd_energy), power<N>_average with power<N>_average_interval (µW, ms: amdgpu,
// ACPI power meters such as NVIDIA Grace's) and power<N>_input (µW); *_label names a channel.
// Limits (power<N>_cap, *_max, *_crit, ...) are settings, not readings, and are never read.
//
// Which readings of a chip:
//   - a chip with energy counters: its counters only (its power readings measure the same thing);
//   - otherwise per N: power<N>_average (its window from power<N>_average_interval where the chip
//     states it), else power<N>_input;
//   - an ina3221 without power files (the mainline driver, e.g. Jetson with JetPack 5 and later):
//     per channel N = 1..3 the product of bus voltage in<N>_input (mV) and current curr<N>_input
//     (mA), as the driver's documentation says to compute power host-side. Both are measured; the
//     product of the two averages is taken as the mean power;
//   - amdgpu APUs: fastPPT is left out where slowPPT is there (the same power, a shorter average);
//   - amd_energy on several sockets: the Ecore counters are left out (the files do not say which
//     socket a core is on, so their containment could not be stated); the Esocket ones are kept.
// Older drivers put the attributes in hwmon<N>/device/ instead of hwmon<N>/: used where hwmon<N>/
// has none.
//
// Domains: the chip's name, then "-" and the channel's label where it has one (lower case, other
// characters as '-': "amdgpu-ppt", "ina3221-vdd_in"), or "-" and the attribute ("energy2") where a
// chip without labels has several channels. Where two chips in the tree share a name, the chip's
// part is "<name>-<PCI address>" (from the `device` link, "amdgpu-0000:03:00.0-ppt") or, without a
// PCI address or where that is shared too, "<name>-hwmon<N>". device_bus_id carries the PCI address.
// ACPI power meters (chip power_meter, one power1 each) that state what they measure in
// power1_oem_info (in hwmon<N>/device/, or hwmon<N>/ in older layouts) are named by it instead:
// NVIDIA Grace's "<Part> Power Socket <S>" meters become grace-module-<S> (the whole Grace Hopper
// superchip: Grace, Hopper, memory, regulator loss), grace-socket-<S> (the Grace socket: CPU and
// SysIO), grace-cpu-<S> (the CPU rail), grace-sysio-<S> (the SoC rail); any other text becomes its
// sanitised self ("DRAM Power Socket 0" -> "dram-power-socket-0"); a name two chips share takes
// "-hwmon<N>". Without the file the chip is named as above (power_meter, power_meter-hwmon<N>).
// Containment (parent_domain), within one chip: amd_energy's Ecore in its Esocket (one socket); xe's
// pkg in card; an ina3221's rails in its VDD_IN (the module's input on Jetson Orin NX/Nano); a
// PMBus supply's pout* in its pin. Between Grace meters, per socket, only to meters read here: CPU
// and SysIO in the socket's Grace meter, else in its module; Grace in its module (Grace CPU
// Superchips have no module meter: their Grace meters are top level). A meter without oem text, with
// text greenprobe does not know, or whose text another meter repeats, is top level (what it includes
// is not stated): info()'s oem_info_<domain> says which and why. Everything else is top level. NVML's
// module<N> is another sensor's reading of the same Grace Hopper module, and containment is only
// stated within one sensor: with nvml and hwmon both open, a total adds module<N> and
// grace-module-<S> both (leave the meters out with skip_chips=power_meter where NVML has the module).
//
// Channel facts:
//   resolution 1 µJ / 1 µW (the ABI's units; the hardware's own step is not in the files).
//   wrap_j 0: the kernel keeps 64-bit accumulators (i915/xe/amd_energy extend the hardware's 32-bit
//     counters), so a backward step is a glitch (the sampler's judge_step), never a wrap.
//   max_power_w, generous ceilings: amdgpu 2000 W (MI355X boards are rated 1400 W), i915/xe 1000 W,
//     amd_energy/zenpower 1000 W per socket, ina3221 1000 W (Jetson modules draw < 100 W),
//     power_meter 5000 W (an ACPI power meter can measure a whole server); any other chip 0 (unknown:
//     no ceiling; backward steps are still caught).
//   nominal_update_period_ns from the chip's update_interval (ms) where it has one, else 0.
//   Power windows: power<N>_average_interval gives the window exactly. Without it the window is
//     unknown: the ABI calls power<N>_input "instantaneous", but every chip averages over its own
//     conversion time (INA3221: 0.14-8.2 ms x 1-1024 samples; firmware-computed readings: not
//     documented). Those channels state the range [0.1 ms, 1 s] (or up to the chip's update_interval
//     where that is longer), nominal 1 ms; the bounds hold for any window in the range.
//
// Options:
//   hwmon_root=/sys/class/hwmon   the tree (a container: mount the host's /sys)
//   chips=a,b                     only these chips: names ("amdgpu") or directories ("hwmon3")
//   skip_chips=a,b                leave these out (sensors="auto" fills it from the kinds that opened)
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <set>

#include "fileio.hpp"
#include "text.hpp"
#include "greenprobe/registry.hpp"
#include "hwmon_parse.hpp"

namespace greenprobe {
namespace {

constexpr int64_t kMs = 1000000;
constexpr int64_t kUnknownWindowMinNs = kMs / 10;
constexpr int64_t kUnknownWindowMaxNs = 1000 * kMs;
constexpr int64_t kUnknownWindowNominalNs = kMs;

const char* kRootFix =
    "this machine exposes no /sys/class/hwmon (no hardware-monitoring driver loaded, or a container without "
    "the host's /sys): mount the host's /sys (e.g. docker run -v /sys:/host/sys:ro) and set "
    "GREENPROBE_HWMON_ROOT=/host/sys/class/hwmon";

std::string permission_fix(const std::string& paths) {
    return "grant read access to the group that runs greenprobe: until reboot `sudo chmod g+r,o+r " + paths +
           "`, for good a udev rule such as ACTION==\"add\", SUBSYSTEM==\"hwmon\", ATTR{name}==\"amd_energy\", "
           "RUN+=\"/bin/sh -c 'chmod o+r /sys%p/energy*_input'\"; or run `greenprobe daemon` as root and connect "
           "to it. amd_energy's files are readable by root only (0400) since CVE-2020-8694 (PLATYPUS): high-rate "
           "energy data is a side channel";
}

// The chips named in an option: its comma-separated entries, blanks trimmed, empty ones left out.
std::vector<std::string> split_list(const std::string& s) {
    std::vector<std::string> out;
    for (auto& entry : text::split(s)) {
        if (!entry.empty()) out.push_back(std::move(entry));
    }
    return out;
}

bool starts_with(const std::string& s, const char* p) { return s.compare(0, std::strlen(p), p) == 0; }

double max_power_of(const std::string& chip) {
    if (chip == "amdgpu") return 2000.0;
    if (chip == "power_meter") return 5000.0;
    if (chip == "i915" || chip == "xe" || chip == "amd_energy" || chip == "zenpower" || chip == "ina3221") return 1000.0;
    return 0.0;
}

enum class Source : uint8_t { Energy, PowerAverage, PowerInput, VoltCurrent };

struct Planned {
    Source source;
    std::string base;   // "energy1", "power2", "in1"
    std::string label;  // as the chip states it; "" without a label file
    std::vector<std::string> files;  // 1 file, 2 for VoltCurrent (volts first)
    int64_t window_ns = 0, window_min_ns = 0, window_max_ns = 0;
};

struct Chip {
    std::string dir_name;  // "hwmon3"
    int index = -1;
    std::string dir;       // where the attributes are
    std::string name;
    std::string bus_id;    // PCI address of the device link, or ""
    int64_t update_interval_ns = 0;
    std::vector<Planned> planned;
    std::vector<std::string> notes;  // channels left out, and why
    bool has_oem = false;  // a power1_oem_info file was there (ACPI power meters)
    std::string oem_info;  // its text, trimmed
    std::string oem_where; // where it was looked for, for the info text
};

class HwmonSensor final : public Sensor {
  public:
    explicit HwmonSensor(const Options& o) {
        root_ = o.get("hwmon_root", "/sys/class/hwmon");
        const std::vector<std::string> only = split_list(o.get("chips", ""));
        const std::vector<std::string> skip = split_list(o.get("skip_chips", ""));
        int err = 0;
        std::vector<std::string> entries = list_dir(root_, &err);
        if (err != 0) throw errno_error(err, "hwmon cannot list the hwmon tree", root_, kRootFix);
        std::vector<std::pair<int, std::string>> dirs;
        for (const auto& e : entries) {
            const int i = hwmon::hwmon_index(e);
            if (i >= 0) dirs.emplace_back(i, e);
        }
        std::sort(dirs.begin(), dirs.end());  // hwmon2 before hwmon10

        std::vector<Chip> chips;
        for (const auto& [index, dir_name] : dirs) chips.push_back(scan_chip(index, dir_name));
        std::map<std::string, int> name_count;
        std::map<std::string, int> bus_count;
        std::map<std::string, int> oem_count;  // chips named by their power1_oem_info, per name
        for (const auto& c : chips) {
            if (c.name.empty() || c.planned.empty()) continue;
            ++name_count[c.name];
            if (!c.bus_id.empty()) ++bus_count[c.name + "@" + c.bus_id];
            if (!oem_id(c).empty()) ++oem_count[oem_id(c)];
        }
        std::vector<GraceChannel> grace;  // channels of Grace meters, for containment once all are open

        std::set<std::string> matched;  // entries of `chips` some chip answered to
        std::vector<std::string> denied_paths, denied_chips;
        for (auto& c : chips) {
            const std::string who = (c.name.empty() ? "?" : c.name) + " (" + c.dir_name + ")";
            seen_ += (seen_.empty() ? "" : ", ") + who;
            if (c.name.empty()) {
                skipped_.push_back(who + ": no name file");
                continue;
            }
            auto listed = [&](const std::vector<std::string>& list) {
                for (const auto& x : list) {
                    if (x == c.name || x == c.dir_name) return x;
                }
                return std::string();
            };
            const std::string asked = listed(only);
            if (!asked.empty()) matched.insert(asked);
            if (!listed(skip).empty()) {
                skipped_.push_back(who + ": in skip_chips (measured by another sensor, or left out by the user)");
                continue;
            }
            if (!only.empty() && asked.empty()) {
                skipped_.push_back(who + ": not in chips");
                continue;
            }
            if (c.planned.empty()) {
                skipped_.push_back(who + ": no energy or power readings");
                continue;
            }
            const std::string oem = oem_id(c);
            const bool oem_unique = !oem.empty() && oem_count[oem] == 1;
            std::string chip_id = hwmon::sanitise(c.name);
            if (!oem.empty()) {
                chip_id = oem_unique ? oem : oem + "-" + c.dir_name;
            } else if (name_count[c.name] > 1) {
                chip_id += "-" + (!c.bus_id.empty() && bus_count[c.name + "@" + c.bus_id] == 1 ? c.bus_id : c.dir_name);
            }
            std::string denied;
            const std::size_t first = channels_.size();
            std::size_t power1 = SIZE_MAX;  // the channel power1_oem_info describes
            for (auto& p : c.planned) {
                if (!open_channel(c, p, chip_id, denied)) {
                    if (!denied.empty()) break;
                } else if (p.base == "power1") {
                    power1 = channels_.size() - 1;
                }
            }
            if (!denied.empty()) {  // the chip is unreadable: none of its channels, and say so
                channels_.resize(first);
                labels_.resize(first);
                reads_.resize(first);
                denied_paths.push_back(denied);
                denied_chips.push_back(who);
                skipped_.push_back(who + ": " + denied + " is not readable (permission denied)");
                if (!asked.empty()) {
                    throw SensorError(ErrorCategory::Permission,
                                      "hwmon cannot read " + denied + " of chip " + who + ", asked for in chips",
                                      permission_fix(c.dir + "/*_input"));
                }
                continue;
            }
            for (const auto& n : c.notes) skipped_.push_back(who + ": " + n);
            if (channels_.size() == first) continue;
            used_ += (used_.empty() ? "" : ", ") + who + (c.bus_id.empty() ? "" : " at " + c.bus_id);
            set_parents(c, first);
            if (power1 != SIZE_MAX && (c.has_oem || c.name == "power_meter")) {
                grace.push_back(GraceChannel{power1, c.has_oem ? hwmon::parse_grace_oem(c.oem_info) : hwmon::GraceOem{},
                                             oem_unique, c.has_oem, c.oem_info, c.oem_where});
            }
        }
        set_grace_parents(grace);
        for (const auto& x : only) {
            if (!matched.count(x)) {
                throw SensorError(ErrorCategory::NotFound,
                                  "hwmon: chip '" + x + "' (chips option) is not under " + root_ + "; chips seen: " +
                                      (seen_.empty() ? "none" : seen_),
                                  "name chips by their name file or hwmon<N> directory (`grep . " + root_ +
                                      "/*/name`), or load the chip's driver");
            }
        }
        if (channels_.empty()) {
            if (!denied_paths.empty()) {
                std::string paths;
                for (const auto& p : denied_paths) paths += (paths.empty() ? "" : " ") + p;
                std::string who;
                for (const auto& w : denied_chips) who += (who.empty() ? "" : ", ") + w;
                throw SensorError(ErrorCategory::Permission, "hwmon may not read the readings of " + who + ": " + paths,
                                  permission_fix(paths));
            }
            std::string why;
            for (const auto& s : skipped_) why += "; " + s;
            throw SensorError(ErrorCategory::NotFound,
                              "hwmon found no chip with energy or power readings under " + root_ + "; chips seen: " +
                                  (seen_.empty() ? "none" : seen_) + why,
                              "load the driver of the device to measure (amdgpu, i915 or xe, amd_energy, ina3221, "
                              "acpi_power_meter), or take it out of skip_chips / put it in chips; "
                              "`grep . " + root_ + "/*/name` lists the chips");
        }
    }

    std::string kind() const override { return "hwmon"; }
    const std::vector<ChannelInfo>& channels() const override { return channels_; }
    // Each read goes to the driver (MMIO, an I2C transfer, an SMU or ACPI call): nothing here updates
    // faster than a millisecond.
    int64_t min_period_ns() const override { return kMs; }

    void poll(std::vector<Reading>& out) override {
        char buf[64];
        for (std::size_t c = 0; c < reads_.size(); ++c) {
            Read& r = reads_[c];
            Reading& o = out[c];
            if (r.gone) {
                o.status = PollStatus::Gone;
                continue;
            }
            long long v[2] = {0, 0};
            bool ok = true;
            for (std::size_t f = 0; f < r.fds.size() && ok; ++f) {
                std::size_t len = 0;
                const int e = pread_text(r.fds[f].get(), buf, sizeof buf, len);
                if (e != 0) {
                    o.status = hwmon::status_of_read_errno(e);
                    last_error_ = "read of " + r.paths[f] + " failed: " + std::strerror(e) +
                                  (o.status == PollStatus::Gone ? " (the chip is gone: unplugged or its driver unloaded)" : "");
                    if (o.status == PollStatus::Gone) {
                        r.gone = true;
                        r.fds.clear();
                    }
                    ok = false;
                } else if (!parse_value(r, buf, v[f])) {
                    o.status = PollStatus::Retry;
                    last_error_ = "read of " + r.paths[f] + " failed: not a number";
                    ok = false;
                }
            }
            if (!ok) continue;
            o.status = PollStatus::Ok;
            o.energy_j_or_power_w = value_of(r, v);
        }
    }

    std::map<std::string, std::string> info() const override {
        std::map<std::string, std::string> m = {{"hwmon_root", root_}, {"chips_seen", seen_}, {"chips", used_}};
        std::string skipped;
        for (const auto& s : skipped_) skipped += (skipped.empty() ? "" : "; ") + s;
        m["skipped"] = skipped;
        for (std::size_t c = 0; c < reads_.size(); ++c) {
            std::string files;
            for (const auto& p : reads_[c].paths) files += (files.empty() ? "" : " x ") + p;
            m["file_" + channels_[c].domain] = files;
            if (!reads_[c].note.empty()) m["note_" + channels_[c].domain] = reads_[c].note;
        }
        for (const auto& [domain, text] : oem_notes_) m["oem_info_" + domain] = text;
        return m;
    }
    std::string last_error() const override { return last_error_; }

  private:
    struct Read {
        Source source;
        std::vector<Fd> fds;
        std::vector<std::string> paths;
        bool started = false;  // energy: first value read
        unsigned long long base = 0;
        bool gone = false;
        std::string note;
    };

    static bool parse_value(const Read& r, const char* text, long long& out) {
        if (r.source == Source::Energy) {
            uint64_t u = 0;
            if (!text::parse_unsigned(text, u)) return false;
            out = static_cast<long long>(u);  // bit pattern kept: value_of works in unsigned
            return true;
        }
        return text::parse_integer(text, out);
    }

    static double value_of(Read& r, const long long v[2]) {
        switch (r.source) {
            case Source::Energy: {
                const auto raw = static_cast<unsigned long long>(v[0]);
                if (!r.started) {
                    r.started = true;
                    r.base = raw;
                }
                // Energy since the first read, µJ -> J (one division of an exact integer: correctly
                // rounded). A backward step stays backward (negative differences are kept): the
                // sampler flags it as a glitch.
                return raw >= r.base ? static_cast<double>(raw - r.base) / 1e6 : -static_cast<double>(r.base - raw) / 1e6;
            }
            case Source::PowerAverage:
            case Source::PowerInput: return static_cast<double>(v[0]) / 1e6;  // µW -> W
            case Source::VoltCurrent: {  // mV x mA = µW: exact in integers for any value a chip gives
                const bool small = v[0] > -(1LL << 31) && v[0] < (1LL << 31) && v[1] > -(1LL << 31) && v[1] < (1LL << 31);
                return small ? static_cast<double>(v[0] * v[1]) / 1e6
                             : static_cast<double>(v[0]) * static_cast<double>(v[1]) / 1e6;
            }
        }
        return 0.0;
    }

    // Reads a chip's name and attribute list and plans its channels; opens nothing yet.
    Chip scan_chip(int index, const std::string& dir_name) const {
        Chip c;
        c.dir_name = dir_name;
        c.index = index;
        const std::string top = root_ + "/" + dir_name;
        auto name = read_small_file(top + "/name");
        if (!name) name = read_small_file(top + "/device/name");
        c.name = name ? text::trim(*name) : "";
        char link[512];
        const ssize_t n = ::readlink((top + "/device").c_str(), link, sizeof link - 1);
        if (n > 0) {
            std::string target(link, static_cast<std::size_t>(n));
            const auto slash = target.find_last_of('/');
            if (slash != std::string::npos) target = target.substr(slash + 1);
            if (hwmon::is_pci_address(target)) c.bus_id = text::lower(target);
        }
        c.dir = top;
        std::set<std::string> files = files_of(top);
        if (!has_reading(files)) {
            std::set<std::string> legacy = files_of(top + "/device");
            if (has_reading(legacy)) {
                c.dir = top + "/device";
                files = std::move(legacy);
            }
        }
        // ACPI power meters describe their power1 in power1_oem_info: on the ACPI device (device/),
        // where the attributes also were in older kernels, or beside the attributes.
        c.oem_where = dir_name + "/device/ or " + dir_name + "/";
        for (const std::string& at : {top + "/device/power1_oem_info", top + "/power1_oem_info"}) {
            if (auto oem = read_small_file(at)) {
                c.oem_info = text::trim(*oem);
                c.has_oem = !hwmon::sanitise(c.oem_info).empty();
                break;
            }
        }
        if (auto ui = read_small_file(top + "/update_interval")) {
            long long ms = 0;
            if (text::parse_integer(ui->c_str(), ms) && ms > 0) c.update_interval_ns = ms * kMs;
        }
        plan(c, files);
        return c;
    }

    static std::set<std::string> files_of(const std::string& dir) {
        const std::vector<std::string> v = list_dir(dir);
        return std::set<std::string>(v.begin(), v.end());
    }

    static bool has_reading(const std::set<std::string>& files) {
        for (const auto& f : files) {
            hwmon::AttrName a;
            if (!hwmon::parse_attr(f, a)) continue;
            if ((a.type == "energy" && a.item == "input") ||
                (a.type == "power" && (a.item == "input" || a.item == "average"))) {
                return true;
            }
        }
        return false;
    }

    void plan(Chip& c, const std::set<std::string>& files) const {
        std::map<int, std::set<std::string>> energy, power, in, curr;
        for (const auto& f : files) {
            hwmon::AttrName a;
            if (!hwmon::parse_attr(f, a)) continue;
            if (a.type == "energy") energy[a.index].insert(a.item);
            if (a.type == "power") power[a.index].insert(a.item);
            if (a.type == "in") in[a.index].insert(a.item);
            if (a.type == "curr") curr[a.index].insert(a.item);
        }
        auto label_of = [&](const std::string& base, const std::set<std::string>& items) {
            if (!items.count("label")) return std::string();
            auto l = read_small_file(c.dir + "/" + base + "_label");
            return l ? text::trim(*l) : std::string();
        };
        const int64_t unknown_max = std::max(kUnknownWindowMaxNs, c.update_interval_ns);
        for (const auto& [i, items] : energy) {
            if (!items.count("input")) continue;
            const std::string base = "energy" + std::to_string(i);
            c.planned.push_back(Planned{Source::Energy, base, label_of(base, items), {c.dir + "/" + base + "_input"}});
        }
        if (!c.planned.empty()) {
            for (const auto& [i, items] : power) {
                if (items.count("input") || items.count("average")) {
                    c.notes.push_back("power" + std::to_string(i) + " left out: the chip's energy counters measure the same");
                }
            }
            set_amd_energy_sockets(c);
            return;
        }
        for (const auto& [i, items] : power) {
            const std::string base = "power" + std::to_string(i);
            Planned p{Source::PowerInput, base, label_of(base, items), {}};
            if (items.count("average")) {
                p.source = Source::PowerAverage;
                p.files.push_back(c.dir + "/" + base + "_average");
                long long ms = 0;
                auto iv = items.count("average_interval") ? read_small_file(c.dir + "/" + base + "_average_interval")
                                                         : std::nullopt;
                if (iv && text::parse_integer(iv->c_str(), ms) && ms > 0) {
                    p.window_ns = ms * kMs;  // stated by the chip: exact
                } else {
                    p.window_ns = kUnknownWindowNominalNs;
                    p.window_min_ns = kUnknownWindowMinNs;
                    p.window_max_ns = unknown_max;
                }
            } else if (items.count("input")) {
                p.files.push_back(c.dir + "/" + base + "_input");
                p.window_ns = kUnknownWindowNominalNs;
                p.window_min_ns = kUnknownWindowMinNs;
                p.window_max_ns = unknown_max;
            } else {
                continue;  // only limits (power<N>_cap, _max, _crit)
            }
            c.planned.push_back(std::move(p));
        }
        if (c.name == "amdgpu") {  // APUs: slowPPT and fastPPT are the same power, averaged differently
            bool slow = false;
            for (const auto& p : c.planned) slow = slow || text::lower(p.label) == "slowppt";
            if (slow) {
                auto it = std::remove_if(c.planned.begin(), c.planned.end(),
                                         [](const Planned& p) { return text::lower(p.label) == "fastppt"; });
                if (it != c.planned.end()) {
                    c.notes.push_back("fastPPT left out: slowPPT measures the same power");
                    c.planned.erase(it, c.planned.end());
                }
            }
        }
        if (c.planned.empty() && c.name == "ina3221") {
            for (int i = 1; i <= 3; ++i) {
                if (!in.count(i) || !in[i].count("input") || !curr.count(i) || !curr[i].count("input")) continue;
                const std::string base = "in" + std::to_string(i);
                Planned p{Source::VoltCurrent, base, label_of(base, in[i]),
                          {c.dir + "/" + base + "_input", c.dir + "/curr" + std::to_string(i) + "_input"}};
                p.window_ns = kUnknownWindowNominalNs;
                p.window_min_ns = kUnknownWindowMinNs;
                p.window_max_ns = unknown_max;
                c.planned.push_back(std::move(p));
            }
        }
    }

    static void set_amd_energy_sockets(Chip& c) {
        if (c.name != "amd_energy") return;
        int sockets = 0;
        for (const auto& p : c.planned) sockets += starts_with(text::lower(p.label), "esocket") ? 1 : 0;
        if (sockets <= 1) return;
        auto it = std::remove_if(c.planned.begin(), c.planned.end(),
                                 [](const Planned& p) { return starts_with(text::lower(p.label), "ecore"); });
        if (it != c.planned.end()) {
            c.notes.push_back("Ecore counters left out: with several sockets the files do not say which socket a core "
                              "is on (the Esocket counters include them)");
            c.planned.erase(it, c.planned.end());
        }
    }

    // Opens one planned channel and reads it once. False when it is left out: `denied` is set when
    // a file may not be read (the whole chip is then left out), a note is added otherwise.
    bool open_channel(Chip& c, const Planned& p, const std::string& chip_id, std::string& denied) {
        Read r;
        r.source = p.source;
        char buf[64];
        for (const auto& path : p.files) {
            Fd fd;
            int e = Fd::open_ro(path, fd);
            std::size_t len = 0;
            if (e == 0) e = pread_text(fd.get(), buf, sizeof buf, len);
            long long v = 0;
            if (e == EACCES || (e == EPERM && !fd.valid())) {
                denied = path;
                return false;
            }
            if (e == EPERM || e == EAGAIN || e == EBUSY || e == EIO) {
                // amdgpu answers EPERM while the GPU sleeps (runtime PM) or resets; buses can be busy:
                // keep the channel, it reads once the device answers
                r.note = "first read failed (" + std::string(std::strerror(e)) + "): polled until it answers";
            } else if (e != 0) {
                c.notes.push_back(path + " left out: " + std::strerror(e));
                return false;
            } else if (!parse_value(r, buf, v)) {
                c.notes.push_back(path + " left out: does not hold a number");
                return false;
            } else if (r.source == Source::Energy) {
                r.started = true;  // energy counts from this first read
                r.base = static_cast<unsigned long long>(v);
            }
            r.fds.push_back(std::move(fd));
            r.paths.push_back(path);
        }
        ChannelInfo info;
        std::string suffix = hwmon::sanitise(p.label);
        if (suffix.empty() && c.planned.size() > 1) suffix = p.base;
        info.domain = suffix.empty() ? chip_id : chip_id + "-" + suffix;
        for (const auto& other : channels_) {
            if (other.domain == info.domain) info.domain += "-" + p.base;  // two channels with one label
        }
        info.quantity = p.source == Source::Energy ? Quantity::EnergyCounter : Quantity::Power;
        (p.source == Source::Energy ? info.resolution_j : info.resolution_w) = 1e-6;  // µJ, µW
        info.nominal_update_period_ns = c.update_interval_ns;
        info.averaging_window_ns = p.window_ns;
        info.averaging_window_min_ns = p.window_min_ns;
        info.averaging_window_max_ns = p.window_max_ns;
        info.device_bus_id = c.bus_id;
        info.max_power_w = max_power_of(c.name);
        info.wrap_j = 0.0;
        channels_.push_back(info);
        labels_.push_back(text::lower(p.label));
        reads_.push_back(std::move(r));
        return true;
    }

    // The domain a chip's power1_oem_info names: grace-<part>-<socket> for a Grace meter, the text
    // sanitised for any other; "" without the file.
    static std::string oem_id(const Chip& c) {
        if (!c.has_oem) return {};
        const hwmon::GraceOem g = hwmon::parse_grace_oem(c.oem_info);
        return g.kind != hwmon::GraceMeter::None ? hwmon::grace_domain(g.kind, g.socket) : hwmon::sanitise(c.oem_info);
    }

    struct GraceChannel {
        std::size_t channel;
        hwmon::GraceOem oem;
        bool unique;      // no other chip's oem text names the same domain
        bool has_oem;
        std::string text, where;
    };

    // Containment between Grace meters, per socket (see the top of this file): CPU and SysIO inside
    // the Grace socket's meter, else inside the module's; Grace inside the module's. Only to meters
    // read here; anything else stays top level, and info() says why.
    void set_grace_parents(const std::vector<GraceChannel>& grace) {
        using hwmon::GraceMeter;
        std::map<std::pair<GraceMeter, int>, std::string> present;
        for (const auto& g : grace) {
            if (g.oem.kind != GraceMeter::None && g.unique) present[{g.oem.kind, g.oem.socket}] = channels_[g.channel].domain;
        }
        for (const auto& g : grace) {
            ChannelInfo& ch = channels_[g.channel];
            const std::string quoted = "'" + g.text + "'";
            if (!g.has_oem) {
                oem_notes_[ch.domain] = "none (no power1_oem_info in " + g.where +
                                        "): what this meter measures is not stated, so it is top level; a total adds it "
                                        "beside any other meter, whether or not one includes the other";
                continue;
            }
            if (g.oem.kind == GraceMeter::None) {
                oem_notes_[ch.domain] = quoted +
                                        ": not a meter greenprobe knows (Module, Grace, CPU or SysIO Power Socket <N>), "
                                        "so it is top level; a total adds it beside any meter that includes it";
                continue;
            }
            const std::string socket = std::to_string(g.oem.socket);
            if (!g.unique) {
                oem_notes_[ch.domain] = quoted + ": more than one meter says so, so none of them is placed inside "
                                                 "another (top level)";
                continue;
            }
            std::vector<GraceMeter> up;  // the meters that include this one, nearest first
            if (g.oem.kind == GraceMeter::Cpu || g.oem.kind == GraceMeter::SysIO) up = {GraceMeter::Grace, GraceMeter::Module};
            if (g.oem.kind == GraceMeter::Grace) up = {GraceMeter::Module};
            for (GraceMeter k : up) {
                auto it = present.find({k, g.oem.socket});
                if (it != present.end()) {
                    ch.parent_domain = it->second;
                    break;
                }
            }
            const char* what = g.oem.kind == GraceMeter::Module  ? "the Grace Hopper module (Grace, Hopper, memory)"
                               : g.oem.kind == GraceMeter::Grace ? "the Grace socket (CPU and SysIO rails)"
                               : g.oem.kind == GraceMeter::Cpu   ? "the CPU rail"
                                                                 : "the SysIO (SoC) rail";
            oem_notes_[ch.domain] =
                quoted + ": " + what + " of socket " + socket + ", " +
                (!ch.parent_domain.empty() ? "inside " + ch.parent_domain
                 : up.empty()             ? "top level"
                                          : "top level (no meter that includes it is read on socket " + socket + ")");
        }
    }

    // Containment inside one chip, by its labels (see the top of this file).
    void set_parents(const Chip& c, std::size_t first) {
        auto domain_of = [&](const std::string& label) -> std::string {
            for (std::size_t k = first; k < channels_.size(); ++k) {
                if (labels_[k] == label) return channels_[k].domain;
            }
            return {};
        };
        std::string socket;
        int sockets = 0;
        for (std::size_t k = first; k < channels_.size(); ++k) {
            if (starts_with(labels_[k], "esocket")) {
                ++sockets;
                socket = channels_[k].domain;
            }
        }
        for (std::size_t k = first; k < channels_.size(); ++k) {
            const std::string& l = labels_[k];
            std::string parent;
            if (c.name == "amd_energy" && starts_with(l, "ecore") && sockets == 1) parent = socket;
            if (c.name == "xe" && l == "pkg") parent = domain_of("card");
            if (c.name == "ina3221" && !l.empty() && l != "vdd_in") parent = domain_of("vdd_in");
            if (starts_with(l, "pout")) parent = domain_of("pin");
            channels_[k].parent_domain = parent;
        }
    }

    std::string root_;
    std::vector<ChannelInfo> channels_;
    std::vector<std::string> labels_;  // lower-case label per channel ("" without one)
    std::vector<Read> reads_;
    std::string seen_, used_;
    std::vector<std::string> skipped_;
    std::map<std::string, std::string> oem_notes_;  // domain -> what its power1_oem_info said and made of it
    std::string last_error_;
};

}  // namespace

std::unique_ptr<Sensor> open_hwmon(const Options& options) { return std::make_unique<HwmonSensor>(options); }

}  // namespace greenprobe
