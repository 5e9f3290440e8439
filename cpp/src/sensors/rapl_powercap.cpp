// rapl-powercap: every RAPL zone of the Linux powercap tree.
// Each zone has energy_uj (cumulative µJ, wraps after max_energy_range_uj) and a name.
//
// Options:
//   powercap_root=/sys/class/powercap
//
// Wrap convention: the counter runs 0..max_energy_range_uj and then restarts at 0, so a wrap adds
// max - prev + new + 1 µJ. (The kernel derives the range from the 32-bit register; the true step
// across a wrap differs from this by less than one energy unit, ~15 µJ.)
#include <map>

#include "fileio.hpp"
#include "greenprobe/counter.hpp"
#include "greenprobe/registry.hpp"
#include "rapl_msr_decode.hpp"
#include "text.hpp"

namespace greenprobe {
namespace {

const char* kPowercapPermissionFix =
    "RAPL energy files are readable by root only since CVE-2020-8694 (Linux 5.10 and backports): run as root, "
    "or grant read access until reboot with `sudo chmod a+r /sys/class/powercap/intel-rapl:*/energy_uj "
    "/sys/class/powercap/intel-rapl:*:*/energy_uj` (persist it with a udev rule or /etc/sysfs.conf), "
    "or run `greenprobe daemon` as root and connect to it. Note: high-rate RAPL data is a side channel.";

// "intel-rapl:X" (package X) and its subzones "intel-rapl:X:Y" (AMD uses the same names) -> X; false
// for anything else. "intel-rapl-mmio:*" duplicates the package domain through another interface
// and is skipped, and so is a name whose numbers do not read as such ("intel-rapl:x").
bool rapl_zone_package(const std::string& name, int& package) {
    if (name.compare(0, 11, "intel-rapl:") != 0) return false;
    const auto sub = name.find(':', 11);
    int x = 0, y = 0;
    if (!text::parse_integer(name.substr(11, sub == std::string::npos ? std::string::npos : sub - 11), x) || x < 0) {
        return false;
    }
    if (sub != std::string::npos && (!text::parse_integer(name.substr(sub + 1), y) || y < 0)) return false;
    package = x;
    return true;
}

class RaplPowercapSensor final : public Sensor {
  public:
    explicit RaplPowercapSensor(const Options& o) {
        root_ = o.get("powercap_root", "/sys/class/powercap");
        int err = 0;
        auto entries = list_dir(root_, &err);
        if (err != 0) {
            throw errno_error(err, "rapl-powercap cannot list the powercap tree", root_,
                              "this machine exposes no powercap tree (common in VMs); in a container, mount the "
                              "host's /sys/class/powercap and set GREENPROBE_POWERCAP_ROOT; otherwise use cpu-estimate");
        }
        struct Found {
            std::string zone, name, path;
            int package;
            uint64_t max_uj;
            Fd fd;
        };
        std::vector<Found> found;
        std::map<std::string, int> name_count;
        for (const auto& z : entries) {
            int package = 0;
            if (!rapl_zone_package(z, package)) continue;
            const std::string dir = root_ + "/" + z;
            auto name = read_small_file(dir + "/name");
            if (!name) continue;
            std::string n = *name;
            while (!n.empty() && (n.back() == '\n' || n.back() == ' ')) n.pop_back();
            int e = 0;
            auto range = read_small_file(dir + "/max_energy_range_uj", &e);
            uint64_t max_uj = 0;
            if (!range || !text::parse_unsigned(range->c_str(), max_uj) || max_uj == 0) {
                if (e == EACCES || e == EPERM) throw errno_error(e, "rapl-powercap cannot read", dir + "/max_energy_range_uj", kPowercapPermissionFix);
                throw SensorError(ErrorCategory::Io, "rapl-powercap: bad max_energy_range_uj in " + dir,
                                  "check the powercap tree at GREENPROBE_POWERCAP_ROOT");
            }
            Found f;
            f.zone = z;
            f.name = n;
            f.path = dir + "/energy_uj";
            f.package = package;
            f.max_uj = max_uj;
            e = Fd::open_ro(f.path, f.fd);
            if (e != 0) throw errno_error(e, "rapl-powercap cannot open", f.path, kPowercapPermissionFix);
            char buf[64];
            std::size_t len = 0;
            uint64_t v = 0;
            e = pread_text(f.fd.get(), buf, sizeof buf, len);
            if (e != 0) throw errno_error(e, "rapl-powercap cannot read", f.path, kPowercapPermissionFix);
            if (!text::parse_unsigned(buf, v)) {
                throw SensorError(ErrorCategory::Io, "rapl-powercap: " + f.path + " does not hold a number",
                                  "check the powercap tree at GREENPROBE_POWERCAP_ROOT");
            }
            ++name_count[n];
            found.push_back(std::move(f));
        }
        if (found.empty()) {
            throw SensorError(ErrorCategory::NotFound, "rapl-powercap found no intel-rapl zone under " + root_,
                              "load the intel_rapl_msr / rapl driver, or point GREENPROBE_POWERCAP_ROOT at a tree that has one; "
                              "on VMs use cpu-estimate");
        }
        for (auto& f : found) {
            ChannelInfo info;
            info.domain = name_count[f.name] > 1 ? f.name + "-" + std::to_string(f.package) : f.name;
            info.quantity = Quantity::EnergyCounter;
            info.resolution_j = 1e-6;
            info.nominal_update_period_ns = 1000000;
            info.wrap_j = (static_cast<double>(f.max_uj) + 1.0) * 1e-6;  // 0..max_energy_range_uj
            info.max_power_w = rapl::max_power_w(f.name);
            channels_.push_back(info);
            zones_.push_back(Zone{f.zone, f.path, std::move(f.fd), WrapCounter(f.max_uj, 1e-6)});
        }
        set_parents(found);
        std::vector<Reading> scratch(channels_.size());
        poll(scratch);
    }

    std::string kind() const override { return "rapl-powercap"; }
    const std::vector<ChannelInfo>& channels() const override { return channels_; }

    void poll(std::vector<Reading>& out) override {
        char buf[64];
        for (std::size_t c = 0; c < zones_.size(); ++c) {
            Zone& z = zones_[c];
            std::size_t len = 0;
            uint64_t v = 0;
            const int e = pread_text(z.fd.get(), buf, sizeof buf, len);
            if (e != 0 || !text::parse_unsigned(buf, v)) {
                out[c].status = (e == ENODEV || e == ENOENT) ? PollStatus::Gone : PollStatus::Retry;
                last_error_ = "read of " + z.path + " failed" + (e ? ": errno " + std::to_string(e) : ": not a number");
                continue;
            }
            out[c].energy_j_or_power_w = z.counter.update(v);
            out[c].status = PollStatus::Ok;
        }
    }

    std::map<std::string, std::string> info() const override {
        std::map<std::string, std::string> m = {{"powercap_root", root_}};
        for (std::size_t c = 0; c < zones_.size(); ++c) m["zone_" + channels_[c].domain] = zones_[c].zone;
        return m;
    }
    std::string last_error() const override { return last_error_; }

  private:
    // The rule the three RAPL sensors share (rapl::parents), from the zones' names: a subzone
    // (intel-rapl:X:Y: core, uncore, or a name RAPL does not document) is inside its package zone
    // intel-rapl:X; psys, dram and package-N are as named; another top zone is at the top.
    template <typename FoundZones>
    void set_parents(const FoundZones& found) {
        std::map<std::string, std::string> domain_of_zone;
        for (std::size_t c = 0; c < found.size(); ++c) domain_of_zone[found[c].zone] = channels_[c].domain;
        std::vector<bool> other_top(found.size(), false);  // a top zone RAPL does not document
        rapl::set_parents(channels_, [&](std::size_t c) {
            const std::string& zone = found[c].zone;
            const std::string& name = found[c].name;
            const auto sub = zone.find(':', 11);  // "intel-rapl:X:Y" -> its package zone "intel-rapl:X"
            const auto it = sub != std::string::npos ? domain_of_zone.find(zone.substr(0, sub)) : domain_of_zone.end();
            const std::string package = it != domain_of_zone.end() ? it->second : "";
            if (name == "psys") return rapl::Placed{rapl::Domain::Psys, package};
            if (name == "dram") return rapl::Placed{rapl::Domain::Dram, package};
            if (name.compare(0, 7, "package") != 0 && sub == std::string::npos) other_top[c] = true;
            if (name.compare(0, 7, "package") == 0 || sub == std::string::npos) {
                return rapl::Placed{rapl::Domain::Package, package};  // another top zone: at the top (below)
            }
            return rapl::Placed{rapl::Domain::Core, package};  // core, uncore, another subzone
        });
        for (std::size_t c = 0; c < found.size(); ++c) {
            if (other_top[c]) channels_[c].parent_domain.clear();
        }
    }

    struct Zone {
        std::string zone, path;
        Fd fd;
        WrapCounter counter;
    };
    std::string root_;
    std::vector<Zone> zones_;
    std::vector<ChannelInfo> channels_;
    std::string last_error_;
};

}  // namespace

std::unique_ptr<Sensor> open_rapl_powercap(const Options& options) {
    return std::make_unique<RaplPowercapSensor>(options);
}

}  // namespace greenprobe
