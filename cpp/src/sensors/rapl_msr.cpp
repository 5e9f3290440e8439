// rapl-msr: RAPL energy counters through the MSR device, one CPU per package.
//
// Options:
//   msr_path=/dev/cpu/{cpu}/msr     template; {cpu} is replaced by the CPU number
//   cpu_vendor=intel|amd            overrides detection from cpuinfo
//   proc_root=/proc                 for cpuinfo (vendor, family, model)
//   sysfs_cpu_root=/sys/devices/system/cpu   for the package and core topology
//   msr_offset_scale=1              byte offset = register x scale. The kernel's msr device uses 1;
//                                   a plain-file register dump needs 8 for AMD, whose energy
//                                   registers are adjacent (0xC0010299..0xC001029B) and would overlap.
#include <algorithm>
#include <set>

#include "cpu_info.hpp"
#include "fileio.hpp"
#include "greenprobe/counter.hpp"
#include "greenprobe/registry.hpp"
#include "rapl_msr_decode.hpp"

namespace greenprobe {
namespace {

std::string msr_file(const std::string& tmpl, int cpu) {
    std::string path = tmpl;
    const auto pos = path.find("{cpu}");
    if (pos != std::string::npos) path.replace(pos, 5, std::to_string(cpu));
    return path;
}

const char* kMsrFix =
    "load the msr driver (sudo modprobe msr) and run as root, or give this program CAP_SYS_RAWIO "
    "(sudo setcap cap_sys_rawio=ep <python>), or use msr-safe; or run `greenprobe daemon` as root "
    "and connect to it; rapl-powercap is the unprivileged-file alternative";

class RaplMsrSensor final : public Sensor {
  public:
    explicit RaplMsrSensor(const Options& o) {
        const std::string tmpl = o.get("msr_path", "/dev/cpu/{cpu}/msr");
        const std::string proc = o.get("proc_root", "/proc");
        const CpuIdentity id = read_cpu_identity(proc);
        const std::string vendor_opt = o.get("cpu_vendor", "");
        if (vendor_opt == "intel") vendor_ = rapl::Vendor::Intel;
        else if (vendor_opt == "amd") vendor_ = rapl::Vendor::Amd;
        else if (!vendor_opt.empty())
            throw SensorError(ErrorCategory::Config, "cpu_vendor must be intel or amd, not '" + vendor_opt + "'",
                              "set GREENPROBE_CPU_VENDOR=intel or amd");
        else if (id.vendor_id == "GenuineIntel") vendor_ = rapl::Vendor::Intel;
        else if (id.vendor_id == "AuthenticAMD" || id.vendor_id == "HygonGenuine") vendor_ = rapl::Vendor::Amd;
        else
            throw SensorError(ErrorCategory::Unsupported,
                              "unknown CPU vendor '" + id.vendor_id + "' in " + proc + "/cpuinfo: no known RAPL registers",
                              "if this CPU implements Intel's or AMD's RAPL MSRs, set GREENPROBE_CPU_VENDOR=intel or amd");
        family_ = id.family;
        offset_scale_ = static_cast<uint64_t>(o.get_int("msr_offset_scale", 1));
        if (offset_scale_ != 1 && offset_scale_ != 8) {
            throw SensorError(ErrorCategory::Config, "msr_offset_scale must be 1 (an MSR device) or 8 (a register dump)",
                              "unset GREENPROBE_MSR_OFFSET_SCALE for /dev/cpu/N/msr");
        }
        model_ = id.model;

        const CpuTopology topo = read_cpu_topology(o.get("sysfs_cpu_root", "/sys/devices/system/cpu"));
        topology_assumed_ = topo.assumed;
        const bool multi = topo.package_cpus.size() > 1;
        bool first_package = true;
        for (const auto& [pkg, cpus] : topo.package_cpus) {
            const int lead = *std::min_element(cpus.begin(), cpus.end());
            Package p;
            p.id = pkg;
            p.path = msr_file(tmpl, lead);
            int e = Fd::open_ro(p.path, p.fd);
            if (e != 0) throw errno_error(e, "rapl-msr cannot open the MSR device", p.path, kMsrFix);
            uint64_t unit = 0;
            const uint32_t unit_reg = rapl::unit_register(vendor_);
            e = pread_u64(p.fd.get(), offset(unit_reg), unit);
            if (e != 0) {
                auto err = errno_error(e, "rapl-msr cannot read the RAPL unit register " + hex(unit_reg), p.path,
                                       "this CPU or hypervisor does not expose RAPL MSRs; try rapl-powercap or cpu-estimate");
                if (e == EIO) throw SensorError(ErrorCategory::Unsupported, err.what(), err.fix());
                throw err;
            }
            unit_value_ = unit;
            for (const auto& reg : rapl::domain_registers(vendor_)) {
                if (reg.platform && !first_package) continue;
                Domain d;
                d.reg = reg;
                d.package_index = packages_.size();
                const double jpc = rapl::joules_per_count(vendor_, reg.domain, unit, family_, model_);
                if (reg.per_core) {
                    std::set<int> cores;
                    for (int cpu : cpus) {
                        const int core = topo.core_of_cpu.count(cpu) ? topo.core_of_cpu.at(cpu) : cpu;
                        if (!cores.insert(core).second) continue;  // SMT sibling: same counter
                        Fd fd;
                        const std::string path = msr_file(tmpl, cpu);
                        int e2 = Fd::open_ro(path, fd);
                        if (e2 != 0) throw errno_error(e2, "rapl-msr cannot open the MSR device", path, kMsrFix);
                        d.core_fds.push_back(std::move(fd));
                    }
                } else {
                    d.core_fds.clear();
                }
                // Present when readable and non-zero (an unimplemented domain reads 0 or fails).
                bool present = true;
                const std::size_t nfd = reg.per_core ? d.core_fds.size() : 1;
                for (std::size_t i = 0; i < nfd && present; ++i) {
                    uint64_t v = 0;
                    const int fd = reg.per_core ? d.core_fds[i].get() : p.fd.get();
                    present = pread_u64(fd, offset(reg.msr), v) == 0 && rapl::energy_counter(v) != 0;
                    if (present) d.counters.emplace_back(rapl::kCounterMax, jpc);
                }
                if (!present) continue;
                ChannelInfo info;
                const std::string base = rapl::powercap_name(reg.domain);
                info.domain = reg.domain == rapl::Domain::Package ? base + "-" + std::to_string(pkg)
                              : (multi && !reg.platform)          ? base + "-" + std::to_string(pkg)
                                                                  : base;
                info.quantity = Quantity::EnergyCounter;
                info.resolution_j = jpc;
                info.nominal_update_period_ns = 1000000;  // ~1 ms per the SDM
                // One register's full range (a per-core domain sums several, each wrapping alone).
                info.wrap_j = static_cast<double>(rapl::kCounterMax + 1) * jpc;
                info.max_power_w = rapl::max_power_w(base);
                channels_.push_back(info);
                domains_.push_back(std::move(d));
            }
            packages_.push_back(std::move(p));
            first_package = false;
        }
        if (channels_.empty()) {
            throw SensorError(ErrorCategory::Unsupported, "rapl-msr found no non-zero RAPL energy counter",
                              "this CPU or hypervisor does not expose RAPL; try rapl-powercap or cpu-estimate");
        }
        set_parents();
        // Prime the counters so the first poll reports 0 J.
        std::vector<Reading> scratch(channels_.size());
        poll(scratch);
    }

    std::string kind() const override { return "rapl-msr"; }
    const std::vector<ChannelInfo>& channels() const override { return channels_; }

    void poll(std::vector<Reading>& out) override {
        for (std::size_t c = 0; c < domains_.size(); ++c) {
            Domain& d = domains_[c];
            const int pkg_fd = packages_[d.package_index].fd.get();
            double joules = 0;
            PollStatus status = PollStatus::Ok;
            const std::size_t n = d.counters.size();
            for (std::size_t i = 0; i < n; ++i) {
                uint64_t v = 0;
                const int fd = d.reg.per_core ? d.core_fds[i].get() : pkg_fd;
                const int e = pread_u64(fd, offset(d.reg.msr), v);
                if (e != 0) {
                    status = (e == ENXIO || e == ENODEV) ? PollStatus::Gone : PollStatus::Retry;
                    last_error_ = "pread of MSR " + hex(d.reg.msr) + " failed: errno " + std::to_string(e);
                    break;
                }
                joules += d.counters[i].update(rapl::energy_counter(v));
            }
            out[c].status = status;
            if (status == PollStatus::Ok) out[c].energy_j_or_power_w = joules;
        }
    }

    std::map<std::string, std::string> info() const override {
        std::map<std::string, std::string> m = {
            {"vendor", vendor_ == rapl::Vendor::Intel ? "intel" : "amd"},
            {"cpu_family", std::to_string(family_)},
            {"cpu_model", std::to_string(model_)},
            {"energy_status_units", std::to_string(rapl::energy_status_units(unit_value_))},
            {"topology_assumed", topology_assumed_ ? "true" : "false"}};
        for (std::size_t i = 0; i < packages_.size(); ++i) m["msr_path_package_" + std::to_string(packages_[i].id)] = packages_[i].path;
        return m;
    }

    std::string last_error() const override { return last_error_; }

  private:
    uint64_t offset(uint32_t reg) const { return static_cast<uint64_t>(reg) * offset_scale_; }

    void set_parents() {  // the rule the three RAPL sensors share
        rapl::set_parents(channels_, [&](std::size_t c) {
            return rapl::Placed{domains_[c].reg.domain, rapl::package_name(packages_[domains_[c].package_index].id)};
        });
    }

    static std::string hex(uint32_t v) {
        char buf[16];
        std::snprintf(buf, sizeof buf, "0x%X", v);
        return buf;
    }

    struct Package {
        int id = 0;
        std::string path;
        Fd fd;
    };
    struct Domain {
        rapl::DomainRegister reg{};
        std::size_t package_index = 0;
        std::vector<Fd> core_fds;         // per-core domains only
        std::vector<WrapCounter> counters;  // one, or one per core
    };

    rapl::Vendor vendor_ = rapl::Vendor::Intel;
    int family_ = -1, model_ = -1;
    uint64_t unit_value_ = 0;
    uint64_t offset_scale_ = 1;
    bool topology_assumed_ = false;
    std::vector<Package> packages_;
    std::vector<Domain> domains_;
    std::vector<ChannelInfo> channels_;
    std::string last_error_;
};

}  // namespace

std::unique_ptr<Sensor> open_rapl_msr(const Options& options) { return std::make_unique<RaplMsrSensor>(options); }

}  // namespace greenprobe
