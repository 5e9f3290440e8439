// rapl-perf: RAPL energy counters through the kernel's perf_event "power" PMU
// (arch/x86/events/rapl.c), readable without root where perf_event_paranoid <= 0 or with
// CAP_PERFMON. One descriptor per event and package, opened on one CPU of that package.
//
// Options:
//   perf_event_root=/sys/bus/event_source/devices   the PMU tree: power/{type,cpumask,events/}
//   sysfs_cpu_root=/sys/devices/system/cpu          the package of each CPU
//   proc_root=/proc                                 perf_event_paranoid, this process's
//                                                   capabilities (self/status) and cpuinfo
//   perf_helper=<path>                              greenprobe-perf-helper, asked for the
//                                                   descriptors when this process may not open
//                                                   them (perf_handoff.hpp); empty: never
//
// The kernel accumulates the 32-bit register into a 64-bit count in 2^-32 J (the events' .scale),
// so the count wraps only after 2^64 x scale = 2^32 J (50 days at 1 kW). It hides the hardware's
// energy unit (2^-ESU J), which is what one step of the count really is: the channels' resolution
// is the coarsest unit the CPU can have for the domain (see hardware_step_j), not the scale, so
// that the attribution's bounds (one resolution step above the last value) stay true.
//
// Packages, not cpumask entries: the cpumask names the CPUs to open events on, one per PMU
// instance. On kernels where the instance was per die (AMD Zen 4 before Linux 6.11: one CPU per
// CCD), several entries belong to one package and each counts that package's whole register;
// opening every entry would count the package several times. So each package is opened once, on
// its first cpumask CPU (topology from sysfs_cpu_root).
#include <sys/syscall.h>
#include <unistd.h>

#include <linux/perf_event.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <set>
#include <sstream>

#include "cpu_info.hpp"
#include "fileio.hpp"
#include "greenprobe/counter.hpp"
#include "greenprobe/registry.hpp"
#include "perf_handoff.hpp"
#include "rapl_msr_decode.hpp"
#include "rapl_perf.hpp"
#include "text.hpp"

namespace greenprobe {
namespace {

struct EventName {
    const char* file;  // events/<file>
    rapl::Domain domain;
};

// In the order rapl-msr reports its domains: package, core (PP0), uncore (PP1), dram, psys.
constexpr EventName kEvents[] = {{"energy-pkg", rapl::Domain::Package},
                                 {"energy-cores", rapl::Domain::Core},
                                 {"energy-gpu", rapl::Domain::Uncore},
                                 {"energy-ram", rapl::Domain::Dram},
                                 {"energy-psys", rapl::Domain::Psys}};

const char* kPerfPermissionFix =
    "allow unprivileged system-wide counting until reboot with `sudo sysctl kernel.perf_event_paranoid=0` "
    "(persist it with `echo kernel.perf_event_paranoid=0 | sudo tee /etc/sysctl.d/90-greenprobe-perf.conf`), "
    "or grant the greenprobe-perf-helper cap_perfmon with `greenprobe setup-perf`, or run `greenprobe daemon` "
    "as root and connect to it. In a container, the runtime must allow perf_event_open (Docker: --cap-add "
    "PERFMON, or a seccomp profile that permits it). Note: high-rate RAPL data is a side channel.";

const char* kNoPmuFix =
    "the kernel exposes no RAPL perf events here: a VM without RAPL, a kernel without RAPL perf support "
    "(Intel: CONFIG_PERF_EVENTS_INTEL_RAPL; AMD: Linux 5.8 or later), or /sys not mounted in this container "
    "(mount the host's /sys/bus/event_source and set GREENPROBE_PERF_EVENT_ROOT). Alternatives: rapl-powercap "
    "or rapl-msr (root), or `greenprobe daemon` as root on the host";

using text::trim;

// "0-3,8,16-17" -> {0,1,2,3,8,16,17}; false when malformed.
bool parse_cpu_list(const std::string& text, std::vector<int>& out) {
    const std::string s = trim(text);
    if (s.empty()) return false;
    std::stringstream in(s);
    std::string part;
    while (std::getline(in, part, ',')) {
        const auto dash = part.find('-');  // after the first digit: "-1" has no first CPU
        int a = 0, b = 0;
        if (dash == 0 || !text::parse_integer(part.substr(0, dash), a) || a < 0) return false;
        b = a;
        if (dash != std::string::npos && (!text::parse_integer(part.substr(dash + 1), b) || b < a)) return false;
        for (int c = a; c <= b; ++c) {
            out.push_back(c);
            if (c == b) break;  // b may be INT_MAX
        }
    }
    return true;
}

// "event=0x02" -> 2 (the power PMU's format: event is config:0-7). As perf's own parser reads a
// term: hex after 0x, else decimal ("event=010" is ten, never octal).
bool parse_event_config(const std::string& text, uint64_t& config) {
    const std::string s = trim(text);
    if (s.compare(0, 6, "event=") != 0 || s.find(',') != std::string::npos) return false;
    const std::string value = s.substr(6);
    const bool hex = value.compare(0, 2, "0x") == 0 || value.compare(0, 2, "0X") == 0;
    uint64_t v = 0;
    if (!(hex ? text::parse_hex(value, v) : text::parse_unsigned(value, v)) || v > 0xFF) return false;
    config = v;
    return true;
}

// The coarsest energy step the hardware can have for the domain: one count of the register, which
// the kernel's 2^-32 J count hides. RAPL units are 2^-14 J (many Intel servers) to 2^-16 J (clients,
// AMD; DRAM on the servers with the fixed-unit quirk), so 2^-14 J bounds them; Sapphire and Emerald
// Rapids count psys in whole joules (the kernel's RAPL_UNIT_QUIRK_INTEL_SPR).
double hardware_step_j(rapl::Domain d, const CpuIdentity& id) {
    const bool intel = id.vendor_id == "GenuineIntel";
    if (d == rapl::Domain::Psys && intel && rapl::intel_psys_fixed_unit(id.family, id.model)) return 1.0;
    return 1.0 / 16384.0;
}

std::string hex(uint64_t v) {
    char buf[24];
    std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
    return buf;
}

class RaplPerfSensor final : public Sensor {
  public:
    explicit RaplPerfSensor(const Options& o) {
        // Every option first: the ones an error path needs are read whether or not it is taken.
        const std::string root = o.get("perf_event_root", "/sys/bus/event_source/devices");
        const std::string sysfs_cpu = o.get("sysfs_cpu_root", "/sys/devices/system/cpu");
        proc_ = o.get("proc_root", "/proc");
        helper_ = o.get("perf_helper", "");
        pmu_ = root + "/power";

        int err = 0;
        auto type_text = read_small_file(pmu_ + "/type", &err);
        if (!type_text) {
            if (err == EACCES || err == EPERM) {
                throw errno_error(err, "rapl-perf cannot read the power PMU's type", pmu_ + "/type",
                                  "make the sysfs tree readable, or " + std::string(kNoPmuFix));
            }
            throw SensorError(ErrorCategory::NotFound, "rapl-perf found no power PMU: " + pmu_ + "/type does not exist",
                              kNoPmuFix);
        }
        uint64_t type = 0;
        if (!text::parse_unsigned(trim(*type_text).c_str(), type) || type > 0xFFFFFFFFull) {
            throw SensorError(ErrorCategory::Io, "rapl-perf: " + pmu_ + "/type does not hold a PMU number",
                              "check the tree at GREENPROBE_PERF_EVENT_ROOT");
        }
        type_ = static_cast<uint32_t>(type);

        std::vector<Event> events = read_events();
        if (events.empty()) {
            throw SensorError(ErrorCategory::Unsupported,
                              "rapl-perf: the power PMU at " + pmu_ + " lists no energy event (energy-pkg, -cores, -gpu, -ram, -psys)",
                              "this CPU exposes no RAPL domain to perf; try rapl-powercap or rapl-msr, or cpu-estimate");
        }

        const std::map<int, int> cpu_of_package = choose_cpus(read_cpu_topology(sysfs_cpu));
        const CpuIdentity id = read_cpu_identity(proc_);
        const bool multi = cpu_of_package.size() > 1;
        bool first_package = true;
        for (const auto& [pkg, cpu] : cpu_of_package) {
            for (const Event& ev : events) {
                if (ev.domain == rapl::Domain::Psys && !first_package) continue;  // platform-wide: once
                Channel ch;
                ch.package = pkg;
                ch.cpu = cpu;
                ch.event = ev;
                ch.counter = WrapCounter(~0ull, ev.scale);
                ChannelInfo info;
                const std::string base = rapl::powercap_name(ev.domain);
                info.domain = ev.domain == rapl::Domain::Package ? base + "-" + std::to_string(pkg)
                              : (multi && ev.domain != rapl::Domain::Psys) ? base + "-" + std::to_string(pkg)
                                                                          : base;
                info.quantity = Quantity::EnergyCounter;
                info.resolution_j = std::max(ev.scale, hardware_step_j(ev.domain, id));
                info.nominal_update_period_ns = 1000000;  // the register's ~1 ms (the SDM)
                info.wrap_j = 18446744073709551616.0 * ev.scale;  // the kernel's 64-bit count
                info.max_power_w = rapl::max_power_w(base);
                channels_.push_back(info);
                chans_.push_back(std::move(ch));
            }
            first_package = false;
        }
        open_all();
        set_parents();
        // Prime the counters so the first poll reports 0 J.
        std::vector<Reading> scratch(channels_.size());
        poll(scratch);
        for (const Reading& r : scratch) {
            if (r.status != PollStatus::Ok) {
                throw SensorError(ErrorCategory::Io, "rapl-perf cannot read the power PMU's counters: " + last_error_,
                                  "check that the power PMU works (`perf stat -a -e power/energy-pkg/ sleep 1`); "
                                  "otherwise use rapl-powercap or rapl-msr");
            }
        }
        require_a_moving_counter();
    }

    // Some virtual machines expose the power PMU and its events while the counters behind them
    // read 0 for ever (seen on a cloud VM: energy-psys only, never moving). A machine always draws
    // power and RAPL's registers move about every millisecond, so a sensor none of whose counters
    // moves within 250 ms (psys counts whole joules on some Xeons: 4 W moves it in that time)
    // measures nothing: refused, so that auto falls back to what is honest.
    void require_a_moving_counter() {
        std::vector<uint64_t> first(chans_.size());
        auto raw = [&](std::vector<uint64_t>& out) {
            for (std::size_t c = 0; c < chans_.size(); ++c) {
                uint64_t count = 0;
                ssize_t n;
                do {
                    n = ::read(chans_[c].fd.get(), &count, sizeof count);
                } while (n < 0 && errno == EINTR);
                out[c] = n == static_cast<ssize_t>(sizeof count) ? count : 0;
            }
        };
        raw(first);
        std::vector<uint64_t> now(chans_.size());
        for (int waited_ms = 0; waited_ms < 250; waited_ms += 5) {
            struct timespec ts = {0, 5000000};
            while (::nanosleep(&ts, &ts) != 0 && errno == EINTR) {
            }
            raw(now);
            if (now != first) return;
        }
        std::string events;
        for (const Channel& ch : chans_) events += (events.empty() ? "" : ", ") + ch.event.file;
        throw SensorError(ErrorCategory::Unsupported,
                          "rapl-perf: none of the power PMU's counters (" + events + ") moved in 250 ms: this machine "
                          "(typically a virtual machine) lists the events but does not count energy",
                          "measure on the host (or a machine whose RAPL counters move: `perf stat -a -e "
                          "power/energy-psys/ sleep 1` reads more than 0 J there); here, cpu-estimate gives an "
                          "estimate, labelled so");
    }

    // The descriptors, and where they came from (for the helper: it hands them over).
    std::vector<perf_handoff::Event> release_events() {
        std::vector<perf_handoff::Event> out;
        for (Channel& ch : chans_) out.push_back({ch.event.file, ch.package, ch.cpu, ch.event.scale, ch.fd.release()});
        return out;
    }

    std::string kind() const override { return "rapl-perf"; }
    const std::vector<ChannelInfo>& channels() const override { return channels_; }

    void poll(std::vector<Reading>& out) override {
        for (std::size_t c = 0; c < chans_.size(); ++c) {
            Channel& ch = chans_[c];
            uint64_t count = 0;
            ssize_t n;
            do {
                n = ::read(ch.fd.get(), &count, sizeof count);
            } while (n < 0 && errno == EINTR);
            if (n == static_cast<ssize_t>(sizeof count)) {
                out[c].energy_j_or_power_w = ch.counter.update(count);
                out[c].status = PollStatus::Ok;
                continue;
            }
            const std::string where = ch.event.file + " on CPU " + std::to_string(ch.cpu);
            if (n == 0) {
                // perf_read returns nothing for an event in error state: its PMU or CPUs went away.
                out[c].status = PollStatus::Gone;
                last_error_ = "read of " + where + " returned no data: the event is in error state";
            } else if (n < 0) {
                const int e = errno;
                out[c].status = (e == ENODEV || e == ENXIO) ? PollStatus::Gone : PollStatus::Retry;
                last_error_ = "read of " + where + " failed: " + std::strerror(e);
            } else {
                out[c].status = PollStatus::Retry;
                last_error_ = "read of " + where + " returned " + std::to_string(n) + " bytes, not 8";
            }
        }
    }

    std::map<std::string, std::string> info() const override {
        std::map<std::string, std::string> m = {{"pmu", pmu_}, {"pmu_type", std::to_string(type_)},
                                                {"cpumask", cpumask_}};
        std::string events, cpus;
        std::set<std::string> seen;
        for (const Channel& ch : chans_) {
            if (seen.insert(ch.event.file).second) {
                events += (events.empty() ? "" : ",") + ch.event.file + "=" + hex(ch.event.config);
                char scale[40];
                std::snprintf(scale, sizeof scale, "%.17g", ch.event.scale);
                m["scale_" + ch.event.file] = scale;
            }
        }
        for (const auto& [pkg, cpu] : cpu_of_package_) {
            cpus += (cpus.empty() ? "" : ",") + std::to_string(pkg) + ":" + std::to_string(cpu);
            m["cpumask_cpus_package_" + std::to_string(pkg)] = listed_of_package_.at(pkg);
        }
        m["events"] = events;
        m["cpu_opened_per_package"] = cpus;  // package:CPU
        m["opened_by"] = via_helper_ ? "greenprobe-perf-helper " + helper_ : "this process";
        m["resolution_j"] = "coarsest hardware energy unit for the domain (2^-14 J; 1 J for SPR/EMR psys), not the 2^-32 J scale";
        return m;
    }

    std::string last_error() const override { return last_error_; }

  private:
    struct Event {
        std::string file;
        rapl::Domain domain = rapl::Domain::Package;
        uint64_t config = 0;
        double scale = 0.0;
    };
    struct Channel {
        int package = 0, cpu = 0;
        Event event;
        Fd fd;
        WrapCounter counter{~0ull, 0.0};
    };

    std::vector<Event> read_events() const {
        std::vector<Event> out;
        const std::string dir = pmu_ + "/events/";
        for (const EventName& name : kEvents) {
            const std::string path = dir + name.file;
            auto text = read_small_file(path);
            if (!text) continue;  // this CPU lacks the domain (AMD: energy-pkg only)
            Event ev;
            ev.file = name.file;
            ev.domain = name.domain;
            if (!parse_event_config(*text, ev.config)) {
                throw SensorError(ErrorCategory::Unsupported,
                                  "rapl-perf: " + path + " holds '" + trim(*text) + "', not event=<number>",
                                  "this kernel's power PMU uses an event format greenprobe does not know; use rapl-powercap or rapl-msr");
            }
            auto scale = read_small_file(path + ".scale");
            char* end = nullptr;
            const std::string scale_text = scale ? trim(*scale) : "";
            ev.scale = std::strtod(scale_text.c_str(), &end);
            if (!scale || end == scale_text.c_str() || *end != '\0' || !(ev.scale > 0.0) || !std::isfinite(ev.scale)) {
                throw SensorError(ErrorCategory::Unsupported,
                                  "rapl-perf: " + path + ".scale is missing or not a positive number",
                                  "the power PMU should give each event's scale (2.3283064365386962890625e-10 J); "
                                  "use rapl-powercap or rapl-msr");
            }
            auto unit = read_small_file(path + ".unit");
            if (!unit || trim(*unit) != "Joules") {
                throw SensorError(ErrorCategory::Unsupported,
                                  "rapl-perf: " + path + ".unit is " + (unit ? "'" + trim(*unit) + "'" : "missing") +
                                      ", not Joules",
                                  "greenprobe reads energy events only; use rapl-powercap or rapl-msr");
            }
            out.push_back(ev);
        }
        return out;
    }

    // Package -> the CPU to open its events on: its first CPU in the PMU's cpumask.
    std::map<int, int> choose_cpus(const CpuTopology& topo) {
        auto mask_text = read_small_file(pmu_ + "/cpumask");
        std::vector<int> listed;
        if (!mask_text || !parse_cpu_list(*mask_text, listed)) {
            throw SensorError(ErrorCategory::Unsupported,
                              "rapl-perf: " + pmu_ + "/cpumask is missing or not a CPU list",
                              "the power PMU names the CPUs its events count on in cpumask; use rapl-powercap or rapl-msr");
        }
        cpumask_ = trim(*mask_text);
        std::map<int, int> package_of_cpu;
        for (const auto& [pkg, cpus] : topo.package_cpus) {
            for (int cpu : cpus) package_of_cpu[cpu] = pkg;
        }
        if (topo.assumed && listed.size() > 1) {
            throw SensorError(ErrorCategory::NotFound,
                              "rapl-perf: the power PMU lists CPUs " + cpumask_ +
                                  " but the CPU topology (cpuN/topology/physical_package_id) is missing, so which share a "
                                  "package is unknown and a package could be counted several times",
                              "mount /sys (or point GREENPROBE_SYSFS_CPU_ROOT at the CPU tree)");
        }
        std::map<int, int> chosen;
        for (int cpu : listed) {
            const auto it = package_of_cpu.find(cpu);
            const int pkg = it != package_of_cpu.end() ? it->second : (topo.assumed ? 0 : -1);
            if (pkg < 0) continue;  // offline, or not in this CPU tree
            std::string& names = listed_of_package_[pkg];
            names += (names.empty() ? "" : ",") + std::to_string(cpu);
            chosen.emplace(pkg, cpu);  // the first listed CPU of the package
        }
        // A package without a listed CPU (the mask and the tree disagree): the kernel moves an
        // event to its package's PMU CPU, so any CPU of the package does.
        for (const auto& [pkg, cpus] : topo.package_cpus) {
            if (chosen.count(pkg)) continue;
            chosen[pkg] = *std::min_element(cpus.begin(), cpus.end());
            listed_of_package_[pkg] = "";
        }
        cpu_of_package_ = chosen;
        return chosen;
    }

    Fd open_event(const Event& ev, int cpu) const {
        perf_event_attr attr;
        std::memset(&attr, 0, sizeof attr);
        attr.size = sizeof attr;
        attr.type = type_;
        attr.config = ev.config;
        const long fd = ::syscall(SYS_perf_event_open, &attr, -1, cpu, -1, PERF_FLAG_FD_CLOEXEC);
        if (fd >= 0) return Fd(static_cast<int>(fd));
        const int e = errno;
        const std::string what = "rapl-perf cannot open the power PMU's " + ev.file + " event (type " +
                                 std::to_string(type_) + ", config " + hex(ev.config) + ") on CPU " + std::to_string(cpu) +
                                 ": perf_event_open: " + std::strerror(e);
        switch (e) {
            case EACCES:
            case EPERM: throw SensorError(ErrorCategory::Permission, what + "; " + permission_diagnosis(), kPerfPermissionFix);
            case ENOENT:
            case EINVAL:
            case EOPNOTSUPP:
            case ENOSYS:
                throw SensorError(ErrorCategory::Unsupported, what + "; the running kernel does not offer this event",
                                  "the tree at " + pmu_ + " may not be the running kernel's (GREENPROBE_PERF_EVENT_ROOT), or "
                                  "the CPU lacks the domain; use rapl-powercap or rapl-msr");
            case ENODEV:
                throw SensorError(ErrorCategory::NotFound, what + "; the CPU is offline or has no such PMU",
                                  "bring the CPU online, or use rapl-powercap or rapl-msr");
            default: throw errno_error(e, what, pmu_, "use rapl-powercap or rapl-msr");
        }
    }

    // Opens every channel's event here; where this process may not (Permission) and a helper is
    // named, asks greenprobe-perf-helper for the descriptors instead. The helper opens the same
    // events from the same trees, but its own view decides: each of ours must be among its events.
    void open_all() {
        try {
            for (Channel& ch : chans_) ch.fd = open_event(ch.event, ch.cpu);
            return;
        } catch (const SensorError& e) {
            if (e.category() != ErrorCategory::Permission || helper_.empty()) throw;
            for (Channel& ch : chans_) ch.fd = Fd();
            std::vector<perf_handoff::Event> got;
            try {
                got = perf_handoff::request_from_helper(helper_);
            } catch (const SensorError& h) {
                // Still this process's permission error; the helper's fix where it refused for want of
                // permission too (the user not in its group), else the direct fixes.
                const bool refused = dynamic_cast<const perf_handoff::HelperRefused*>(&h) != nullptr;
                const bool helper_permission = refused && h.category() == ErrorCategory::Permission;
                throw SensorError(ErrorCategory::Permission,
                                  std::string(e.what()) + "; greenprobe-perf-helper (" + helper_ +
                                      ") could not open them either: " + h.what(),
                                  helper_permission && !h.fix().empty() ? h.fix() : e.fix());
            }
            std::vector<Fd> owned;
            for (auto& g : got) owned.emplace_back(g.fd);  // closed on every way out
            for (Channel& ch : chans_) {
                for (std::size_t i = 0; i < got.size(); ++i) {
                    if (got[i].name == ch.event.file && got[i].package == ch.package && owned[i].get() >= 0) {
                        ch.cpu = got[i].cpu;
                        ch.fd = std::move(owned[i]);
                        break;
                    }
                }
                if (ch.fd.get() < 0) {
                    throw SensorError(ErrorCategory::Io,
                                      "greenprobe-perf-helper (" + helper_ + ") did not hand over " + ch.event.file +
                                          " of package " + std::to_string(ch.package),
                                      "the helper and this process see different CPU or PMU trees: the helper reads "
                                      "/sys itself; unset GREENPROBE_PERF_EVENT_ROOT and GREENPROBE_SYSFS_CPU_ROOT");
                }
            }
            via_helper_ = true;
        }
    }

    // Why a system-wide event was refused: the paranoid level, and whether this process holds
    // CAP_PERFMON (38) or CAP_SYS_ADMIN (21, what kernels before 5.8 ask for).
    std::string permission_diagnosis() const {
        const std::string paranoid_path = proc_ + "/sys/kernel/perf_event_paranoid";
        auto paranoid = read_small_file(paranoid_path);
        std::string out;
        long long level = 2;  // unknown: taken as the default, which refuses
        const bool paranoid_read = paranoid && text::parse_integer(*paranoid, level);
        if (paranoid) {
            out = "kernel.perf_event_paranoid is " + trim(*paranoid) + " (" + paranoid_path + "; system-wide events need <= 0" +
                  (paranoid_read ? ")" : "; not a number, so its level is unknown)");
        } else {
            out = "kernel.perf_event_paranoid could not be read at " + paranoid_path;
        }
        const std::string status_path = proc_ + "/self/status";
        auto status = read_small_file(status_path);
        std::string cap_eff;
        if (status) {
            std::istringstream in(*status);
            std::string line;
            while (std::getline(in, line)) {
                if (line.compare(0, 7, "CapEff:") == 0) cap_eff = trim(line.substr(7));
            }
        }
        uint64_t caps = 0;
        if (cap_eff.empty()) {
            out += "; whether this process holds CAP_PERFMON is unknown (no CapEff in " + status_path + ")";
            return out;
        }
        if (!text::parse_hex(cap_eff, caps)) {
            out += "; whether this process holds CAP_PERFMON is unknown (CapEff " + cap_eff + " in " + status_path +
                   " is not a hex mask)";
            return out;
        }
        const bool perfmon = (caps >> 38) & 1ull, sys_admin = (caps >> 21) & 1ull;
        if (!perfmon && !sys_admin) {
            out += "; this process lacks CAP_PERFMON (and CAP_SYS_ADMIN, which kernels before 5.8 ask for): CapEff " +
                   cap_eff + " in " + status_path;
        } else {
            out += std::string("; this process holds ") + (perfmon ? "CAP_PERFMON" : "CAP_SYS_ADMIN") +
                   ", so a security module or the container's seccomp profile refused the call";
        }
        if (paranoid_read && level <= 0 && !perfmon && !sys_admin) {
            out += "; the paranoid level allows it, so a security module or the container's seccomp profile refused the call";
        }
        return out;
    }

    void set_parents() {  // the rule the three RAPL sensors share
        rapl::set_parents(channels_, [&](std::size_t c) {
            return rapl::Placed{chans_[c].event.domain, rapl::package_name(chans_[c].package)};
        });
    }

    std::string pmu_, proc_, cpumask_, helper_;
    bool via_helper_ = false;
    uint32_t type_ = 0;
    std::map<int, int> cpu_of_package_;
    std::map<int, std::string> listed_of_package_;
    std::vector<Channel> chans_;
    std::vector<ChannelInfo> channels_;
    std::string last_error_;
};

}  // namespace

std::unique_ptr<Sensor> open_rapl_perf(const Options& options) { return std::make_unique<RaplPerfSensor>(options); }

std::vector<perf_handoff::Event> open_rapl_perf_events(const Options& options) {
    if (!options.get("perf_helper", "").empty()) {
        throw SensorError(ErrorCategory::Config, "open_rapl_perf_events opens the events itself: no perf_helper",
                          "leave the perf_helper option out");
    }
    RaplPerfSensor sensor(options);
    return sensor.release_events();
}

}  // namespace greenprobe
