// rapl-perf against the kernel's RAPL perf PMU faked at the libc boundary: a power PMU tree in a
// temp folder, and tests/fixtures/fake_perf.c (syscall, read, close) loaded with LD_PRELOAD.
//
// How the fake gets in: main() looks for the fake's marker symbol; without it, the test re-executes
// itself with LD_PRELOAD set, putting the sanitizer runtime this binary was linked with first
// (ASan refuses to start when another library precedes it in the initial library list), so the same
// sanitized binary runs under ctest and by hand. Energies are checked against the exact law the fake
// follows, written here again: each poll is bracketed by clock reads, and the energy between two
// polls must lie between the quantised truth of the narrowest and the widest span they can cover.
#include <dlfcn.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "check.hpp"
#include "fixtures.hpp"
#include "greenprobe/clock.hpp"
#include "greenprobe/rapl_domains.hpp"
#include "greenprobe/registry.hpp"

using namespace greenprobe;
using fixtures::temp_dir;
using fixtures::mkdirs;
using fixtures::write_file;

namespace {

constexpr double kPi = 3.14159265358979323846;

std::string read_text(const std::string& path) {
    std::ifstream f(path);
    std::stringstream s;
    s << f.rdbuf();
    return s.str();
}

// The power law of the fake, independently: factor x (base + amp sin(2 pi f (t - t0))), its energy
// quantised to the update period and to the hardware step 2^-esu J.
struct Law {
    double base_w = 80, amp_w = 30, freq_hz = 7;
    int64_t t0_ns = 0, update_ns = 1000000;
    int esu = 14;
    double scale_factor = 1.0;  // .scale / 2^-32: a tree whose scale differs reports other joules

    double exact_j(double factor, int64_t t_ns) const {
        const double tau = static_cast<double>(t_ns - t0_ns) * 1e-9, w = 2 * kPi * freq_hz;
        return factor * (base_w * tau + amp_w / w * (1 - std::cos(w * tau)));
    }
    double counted_j(double factor, int64_t t_ns) const {
        if (update_ns > 0) t_ns = t0_ns + (t_ns - t0_ns) / update_ns * update_ns;
        const double step = std::ldexp(1.0, -esu);
        return std::floor(exact_j(factor, t_ns) / step) * step * scale_factor;
    }
};

struct Tree {
    std::string dir, root, sys, proc, log;
    Law law;
};

struct Layout {
    std::vector<std::pair<int, int>> cpus;        // CPU, package (online CPUs)
    std::string cpumask;                          // the PMU's cpumask file
    std::vector<std::pair<std::string, int>> events;  // energy-pkg -> 2 ...
    std::map<std::pair<int, int>, double> factor;  // (package, config) -> factor of the law
    std::string vendor = "GenuineIntel";
    int model = 85;
    std::string scale = "2.3283064365386962890625e-10";
    std::string unit = "Joules";
    std::string paranoid = "2";
    std::string cap_eff = "0000000000000000";
    bool topology = true;
};

// Writes the tree and points the fake at the same hardware.
Tree make_tree(const Layout& l) {
    Tree t;
    t.dir = temp_dir();
    t.root = t.dir + "/devices";
    t.sys = t.dir + "/cpu";
    t.proc = t.dir + "/proc";
    t.log = t.dir + "/perf.log";
    const std::string pmu = t.root + "/power";
    mkdirs(pmu + "/events");
    write_file(pmu + "/type", "42\n");
    write_file(pmu + "/cpumask", l.cpumask + "\n");
    for (const auto& [name, config] : l.events) {
        char ev[32];
        std::snprintf(ev, sizeof ev, "event=0x%02x\n", config);
        write_file(pmu + "/events/" + name, ev);
        write_file(pmu + "/events/" + name + ".scale", l.scale + "\n");
        write_file(pmu + "/events/" + name + ".unit", l.unit + "\n");
    }
    std::string cpus, cpuinfo;
    for (const auto& [cpu, pkg] : l.cpus) {
        if (l.topology) {
            const std::string topo = t.sys + "/cpu" + std::to_string(cpu) + "/topology";
            mkdirs(topo);
            write_file(topo + "/physical_package_id", std::to_string(pkg) + "\n");
            write_file(topo + "/core_id", std::to_string(cpu) + "\n");
        }
        cpus += (cpus.empty() ? "" : ",") + std::to_string(cpu) + ":" + std::to_string(pkg);
        cpuinfo += "processor\t: " + std::to_string(cpu) + "\nvendor_id\t: " + l.vendor + "\ncpu family\t: " +
                   (l.vendor == "GenuineIntel" ? "6" : "25") + "\nmodel\t\t: " + std::to_string(l.model) + "\n\n";
    }
    mkdirs(t.proc + "/sys/kernel");
    mkdirs(t.proc + "/self");
    write_file(t.proc + "/sys/kernel/perf_event_paranoid", l.paranoid + "\n");
    write_file(t.proc + "/self/status", "Name:\ttest\nCapInh:\t0000000000000000\nCapEff:\t" + l.cap_eff + "\n");
    write_file(t.proc + "/cpuinfo", cpuinfo);

    std::string events, scales;
    for (const auto& [name, config] : l.events) events += (events.empty() ? "" : ",") + std::to_string(config);
    for (const auto& [key, f] : l.factor) {
        scales += (scales.empty() ? "" : ",") + std::to_string(key.first) + ":" + std::to_string(key.second) + ":" +
                  std::to_string(f);
    }
    t.law.t0_ns = now_ns();
    t.law.scale_factor = std::strtod(l.scale.c_str(), nullptr) / std::ldexp(1.0, -32);
    ::setenv("FAKE_PERF_TYPE", "42", 1);
    ::setenv("FAKE_PERF_CPUS", cpus.c_str(), 1);
    ::setenv("FAKE_PERF_EVENTS", events.c_str(), 1);
    ::setenv("FAKE_PERF_SCALE", scales.c_str(), 1);
    ::setenv("FAKE_PERF_BASE_W", std::to_string(t.law.base_w).c_str(), 1);
    ::setenv("FAKE_PERF_AMP_W", std::to_string(t.law.amp_w).c_str(), 1);
    ::setenv("FAKE_PERF_FREQ_HZ", std::to_string(t.law.freq_hz).c_str(), 1);
    ::setenv("FAKE_PERF_T0_NS", std::to_string(t.law.t0_ns).c_str(), 1);
    ::setenv("FAKE_PERF_UPDATE_NS", std::to_string(t.law.update_ns).c_str(), 1);
    ::setenv("FAKE_PERF_ESU", std::to_string(t.law.esu).c_str(), 1);
    ::setenv("FAKE_PERF_LOG", t.log.c_str(), 1);
    ::unsetenv("FAKE_PERF_OPEN_ERRNO");
    ::unsetenv("FAKE_PERF_READ_FAIL");
    return t;
}

Options options_of(const Tree& t) {
    return Options({{"perf_event_root", t.root}, {"sysfs_cpu_root", t.sys}, {"proc_root", t.proc}});
}

// The log's lines of one kind ("open" / "close"), as "type config cpu".
std::multiset<std::string> logged(const Tree& t, const std::string& what) {
    std::multiset<std::string> out;
    std::istringstream in(read_text(t.log));
    std::string line;
    while (std::getline(in, line)) {
        if (line.compare(0, what.size() + 1, what + " ") == 0) out.insert(line.substr(what.size() + 1));
    }
    return out;
}

struct Timed {
    int64_t before = 0, after = 0;
    std::vector<Reading> r;
};

Timed timed_poll(Sensor& s) {
    Timed t;
    t.r.resize(s.channels().size());
    t.before = now_ns();
    s.poll(t.r);
    t.after = now_ns();
    return t;
}

// The energy between polls a and b of a channel lies between the counted truth over the narrowest
// span they can cover (a's end to b's start) and the widest (a's start to b's end).
void check_interval(const Law& law, double factor, const Timed& a, const Timed& b, std::size_t c, const char* what) {
    const double got = b.r[c].energy_j_or_power_w - a.r[c].energy_j_or_power_w;
    const double lo = law.counted_j(factor, b.before) - law.counted_j(factor, a.after);
    const double hi = law.counted_j(factor, b.after) - law.counted_j(factor, a.before);
    if (!(got >= lo - 1e-9 && got <= hi + 1e-9)) {
        std::printf("  %s: %.9f J outside the truth [%.9f, %.9f]\n", what, got, lo, hi);
        ++check::failures();
    }
    CHECK(b.r[c].status == PollStatus::Ok);
    CHECK(lo > 0.0);  // the interval held energy: the check meant something
}

ErrorCategory error_of(const std::function<void()>& fn, std::string* message = nullptr, std::string* fix = nullptr) {
    try {
        fn();
    } catch (const SensorError& e) {
        if (message) *message = e.what();
        if (fix) *fix = e.fix();
        return e.category();
    }
    throw std::runtime_error("no SensorError thrown");
}

bool contains(const std::string& text, const std::string& part) {
    if (text.find(part) != std::string::npos) return true;
    std::printf("  '%s' not in: %s\n", part.c_str(), text.c_str());
    return false;
}

void sleep_ms(int ms) {
    timespec ts{0, ms * 1000000L};
    nanosleep(&ts, nullptr);
}

Layout intel_two_sockets() {
    Layout l;
    l.cpus = {{0, 0}, {1, 0}, {2, 1}, {3, 1}};
    l.cpumask = "0,2";
    l.events = {{"energy-cores", 1}, {"energy-pkg", 2}, {"energy-ram", 3}, {"energy-psys", 5}};
    l.factor = {{{0, 2}, 1.0}, {{0, 1}, 0.6}, {{0, 3}, 0.2}, {{0, 5}, 3.0}, {{1, 2}, 0.9}, {{1, 1}, 0.5}, {{1, 3}, 0.25},
                {{1, 5}, 7.0}};
    return l;
}

}  // namespace

TEST(two_intel_sockets_name_nest_and_measure_every_domain) {
    const Layout l = intel_two_sockets();
    const Tree t = make_tree(l);
    {
        auto s = open_sensor("rapl-perf", options_of(t));
        std::vector<std::string> domains;
        std::map<std::string, std::string> parent;
        for (const auto& ch : s->channels()) {
            domains.push_back(ch.domain);
            parent[ch.domain] = ch.parent_domain;
        }
        // rapl-msr's names and containment: psys once (the platform), from the first package.
        CHECK((domains == std::vector<std::string>{"package-0", "core-0", "dram-0", "psys", "package-1", "core-1", "dram-1"}));
        CHECK((parent == std::map<std::string, std::string>{{"package-0", "psys"}, {"core-0", "package-0"},
                                                             {"dram-0", "psys"}, {"psys", ""}, {"package-1", "psys"},
                                                             {"core-1", "package-1"}, {"dram-1", "psys"}}));
        for (const auto& [domain, stated] : parent) CHECK(rapl::parent_by_name(domain, domains) == stated);  // one rule
        for (const auto& ch : s->channels()) {
            CHECK(ch.quantity == Quantity::EnergyCounter && !ch.estimated);
            CHECK(ch.resolution_j == std::ldexp(1.0, -14));  // the hardware's step, not 2^-32 J
            CHECK(ch.nominal_update_period_ns == 1000000);
            CHECK(ch.wrap_j == std::ldexp(1.0, 32));  // 2^64 counts of 2^-32 J
            CHECK(ch.max_power_w == (ch.domain == "psys" ? 2000.0 : 1000.0));
        }
        // One descriptor per event and package, on the package's cpumask CPU; psys once.
        CHECK((logged(t, "open") == std::multiset<std::string>{"42 1 0", "42 2 0", "42 3 0", "42 5 0", "42 1 2", "42 2 2",
                                                                "42 3 2"}));
        const auto info = s->info();
        CHECK(info.at("pmu_type") == "42");
        CHECK(info.at("cpu_opened_per_package") == "0:0,1:2");
        CHECK(info.at("events") == "energy-pkg=0x2,energy-cores=0x1,energy-ram=0x3,energy-psys=0x5");
        CHECK(info.at("scale_energy-pkg") == "2.3283064365386963e-10");

        const double factor[] = {1.0, 0.6, 0.2, 3.0, 0.9, 0.5, 0.25};
        const Timed first = timed_poll(*s);
        sleep_ms(30);
        const Timed second = timed_poll(*s);
        sleep_ms(15);
        const Timed third = timed_poll(*s);
        for (std::size_t c = 0; c < 7; ++c) {
            check_interval(t.law, factor[c], first, second, c, s->channels()[c].domain.c_str());
            check_interval(t.law, factor[c], second, third, c, s->channels()[c].domain.c_str());
        }
    }
    // Every descriptor is closed with the sensor.
    CHECK(logged(t, "close") == logged(t, "open"));
}

TEST(zen4_cpumask_with_a_cpu_per_ccd_opens_each_package_once) {
    // Two sockets of 4 CCDs x 8 CPUs; a kernel before 6.11 lists one CPU per CCD.
    Layout l;
    for (int cpu = 0; cpu < 64; ++cpu) l.cpus.push_back({cpu, cpu / 32});
    l.cpumask = "0,8,16,24,32,40,48,56";
    l.events = {{"energy-pkg", 2}};  // AMD: the package only
    l.vendor = "AuthenticAMD";
    l.model = 17;
    l.factor = {{{0, 2}, 1.0}, {{1, 2}, 2.5}};
    const Tree t = make_tree(l);
    auto s = open_sensor("rapl-perf", options_of(t));
    REQUIRE(s->channels().size() == 2);
    CHECK(s->channels()[0].domain == "package-0" && s->channels()[1].domain == "package-1");
    CHECK(s->channels()[0].parent_domain.empty() && s->channels()[1].parent_domain.empty());
    CHECK((logged(t, "open") == std::multiset<std::string>{"42 2 0", "42 2 32"}));
    CHECK(s->info().at("cpumask_cpus_package_0") == "0,8,16,24");
    CHECK(s->info().at("cpumask_cpus_package_1") == "32,40,48,56");
    // Each package's energy once (opening every listed CPU would give 4x).
    const Timed a = timed_poll(*s);
    sleep_ms(30);
    const Timed b = timed_poll(*s);
    check_interval(t.law, 1.0, a, b, 0, "package-0");
    check_interval(t.law, 2.5, a, b, 1, "package-1");
}

TEST(zen4_cpumask_without_topology_refuses_to_guess) {
    Layout l;
    for (int cpu = 0; cpu < 16; ++cpu) l.cpus.push_back({cpu, 0});
    l.cpumask = "0,8";
    l.events = {{"energy-pkg", 2}};
    l.topology = false;
    const Tree t = make_tree(l);
    std::string msg, fix;
    CHECK(error_of([&] { open_sensor("rapl-perf", options_of(t)); }, &msg, &fix) == ErrorCategory::NotFound);
    CHECK(contains(msg, "0,8") && contains(msg, "physical_package_id"));
    CHECK(contains(fix, "GREENPROBE_SYSFS_CPU_ROOT"));
    CHECK(logged(t, "open").empty());
}

TEST(amd_single_socket_reports_its_package_only) {
    Layout l;
    l.cpus = {{0, 0}, {1, 0}, {2, 0}, {3, 0}};
    l.cpumask = "0";
    l.events = {{"energy-pkg", 2}};
    l.vendor = "AuthenticAMD";
    l.factor = {{{0, 2}, 1.3}};
    Tree t = make_tree(l);
    t.law.t0_ns -= 10000000000;  // the counter has run for 10 s (~1100 J) before the sensor opens
    ::setenv("FAKE_PERF_T0_NS", std::to_string(t.law.t0_ns).c_str(), 1);
    const int64_t open_before = now_ns();
    auto s = open_sensor("rapl-perf", options_of(t));
    const int64_t open_after = now_ns();
    REQUIRE(s->channels().size() == 1);
    CHECK(s->channels()[0].domain == "package-0" && s->channels()[0].parent_domain.empty());
    CHECK(s->channels()[0].max_power_w == 1000.0);
    const Timed a = timed_poll(*s);
    // Primed at open: the energy since the open, not since the counter started.
    CHECK(a.r[0].energy_j_or_power_w >= t.law.counted_j(1.3, a.before) - t.law.counted_j(1.3, open_after) - 1e-9);
    CHECK(a.r[0].energy_j_or_power_w <= t.law.counted_j(1.3, a.after) - t.law.counted_j(1.3, open_before) + 1e-9);
    sleep_ms(25);
    const Timed b = timed_poll(*s);
    check_interval(t.law, 1.3, a, b, 0, "package-0");
}

TEST(the_scale_file_sets_the_joules_per_count) {
    Layout l = intel_two_sockets();
    l.scale = "4.656612873077392578125e-10";  // 2^-31 J: every count weighs twice as much
    const Tree t = make_tree(l);
    auto s = open_sensor("rapl-perf", options_of(t));
    const Timed a = timed_poll(*s);
    sleep_ms(20);
    const Timed b = timed_poll(*s);
    check_interval(t.law, 1.0, a, b, 0, "package-0 at 2^-31 J per count");
}

TEST(sapphire_rapids_psys_resolution_is_one_joule) {
    Layout l = intel_two_sockets();
    l.model = 0x8F;
    const Tree t = make_tree(l);
    auto s = open_sensor("rapl-perf", options_of(t));
    for (const auto& ch : s->channels()) CHECK(ch.resolution_j == (ch.domain == "psys" ? 1.0 : std::ldexp(1.0, -14)));
}

TEST(permission_denied_names_paranoid_and_cap_perfmon_and_the_fixes) {
    Layout l = intel_two_sockets();
    l.paranoid = "2";
    const Tree t = make_tree(l);
    ::setenv("FAKE_PERF_OPEN_ERRNO", "EACCES", 1);
    std::string msg, fix;
    CHECK(error_of([&] { open_sensor("rapl-perf", options_of(t)); }, &msg, &fix) == ErrorCategory::Permission);
    CHECK(contains(msg, "energy-pkg") && contains(msg, "CPU 0"));
    CHECK(contains(msg, "perf_event_paranoid is 2") && contains(msg, t.proc + "/sys/kernel/perf_event_paranoid"));
    CHECK(contains(msg, "lacks CAP_PERFMON"));
    CHECK(contains(fix, "sudo sysctl kernel.perf_event_paranoid=0") && contains(fix, "/etc/sysctl.d/"));
    CHECK(contains(fix, "greenprobe setup-perf") && contains(fix, "greenprobe daemon"));

    // Paranoid allows it and the process holds CAP_PERFMON, yet EPERM: something else refused.
    l.paranoid = "0";
    l.cap_eff = "0000004000000000";  // bit 38
    const Tree t2 = make_tree(l);
    ::setenv("FAKE_PERF_OPEN_ERRNO", "EPERM", 1);
    CHECK(error_of([&] { open_sensor("rapl-perf", options_of(t2)); }, &msg, &fix) == ErrorCategory::Permission);
    CHECK(contains(msg, "perf_event_paranoid is 0") && contains(msg, "holds CAP_PERFMON") && contains(msg, "seccomp"));
    ::unsetenv("FAKE_PERF_OPEN_ERRNO");
}

// The numbers of the PMU's and /proc's files, each by the one integer parser: decimal where decimal
// (a leading zero is not octal, a number past an int is not wrapped), hex only where the format is.
TEST(an_event_config_with_a_leading_zero_is_decimal) {
    Layout l = intel_two_sockets();
    l.events = {{"energy-pkg", 10}};
    l.factor = {{{0, 10}, 1.0}, {{1, 10}, 0.9}};
    const Tree t = make_tree(l);
    write_file(t.root + "/power/events/energy-pkg", "event=010\n");  // ten (strtoull base 0 read 8)
    auto s = open_sensor("rapl-perf", options_of(t));
    CHECK(s->channels().size() == 2);
    CHECK((logged(t, "open") == std::multiset<std::string>{"42 10 0", "42 10 2"}));
    s.reset();
    for (const char* bad : {"event=0x", "event=0x1g", "event=-1", "event=0x100", "event=1 2"}) {
        const Tree tb = make_tree(intel_two_sockets());
        write_file(tb.root + "/power/events/energy-pkg", std::string(bad) + "\n");
        std::string msg;
        CHECK(error_of([&] { open_sensor("rapl-perf", options_of(tb)); }, &msg) == ErrorCategory::Unsupported);
        CHECK(contains(msg, "not event=<number>"));
    }
}

TEST(a_cpumask_number_past_an_int_is_refused_not_wrapped) {
    Layout l = intel_two_sockets();
    l.cpumask = "0,4294967298";  // strtol read it, and the cast made it CPU 2
    const Tree t = make_tree(l);
    std::string msg;
    CHECK(error_of([&] { open_sensor("rapl-perf", options_of(t)); }, &msg) == ErrorCategory::Unsupported);
    CHECK(contains(msg, "cpumask is missing or not a CPU list"));
    l.cpumask = "0-1,2";  // a range still reads
    const Tree ok = make_tree(l);
    CHECK(open_sensor("rapl-perf", options_of(ok))->channels().size() == 7);
}

TEST(a_paranoid_level_or_capability_mask_that_does_not_read_is_unknown) {
    // strtol read "unset" as level 0 and said the level allowed the call; strtoull read "none" as no
    // capability at all
    Layout l = intel_two_sockets();
    l.paranoid = "unset";
    l.cap_eff = "none";
    const Tree t = make_tree(l);
    ::setenv("FAKE_PERF_OPEN_ERRNO", "EACCES", 1);
    std::string msg;
    CHECK(error_of([&] { open_sensor("rapl-perf", options_of(t)); }, &msg) == ErrorCategory::Permission);
    CHECK(contains(msg, "perf_event_paranoid is unset") && contains(msg, "not a number, so its level is unknown"));
    CHECK(msg.find("the paranoid level allows it") == std::string::npos);
    CHECK(contains(msg, "whether this process holds CAP_PERFMON is unknown (CapEff none in"));
    CHECK(msg.find("lacks CAP_PERFMON") == std::string::npos);
    // the kernel's own forms still read: "-1", and the mask in hex with bit 38 (CAP_PERFMON)
    l.paranoid = "-1";
    l.cap_eff = "000001ffffffffff";
    const Tree t2 = make_tree(l);
    ::setenv("FAKE_PERF_OPEN_ERRNO", "EPERM", 1);
    CHECK(error_of([&] { open_sensor("rapl-perf", options_of(t2)); }, &msg) == ErrorCategory::Permission);
    CHECK(contains(msg, "perf_event_paranoid is -1 (") && contains(msg, "holds CAP_PERFMON"));
    ::unsetenv("FAKE_PERF_OPEN_ERRNO");
}

TEST(an_open_failing_midway_closes_what_it_opened) {
    Layout l = intel_two_sockets();
    l.cpus.push_back({4, 2});  // a third package the fake does not know: its open fails (EINVAL)
    const Tree t = make_tree(l);
    ::setenv("FAKE_PERF_CPUS", "0:0,1:0,2:1,3:1", 1);
    std::string msg;
    CHECK(error_of([&] { open_sensor("rapl-perf", options_of(t)); }, &msg) == ErrorCategory::Unsupported);
    CHECK(contains(msg, "CPU 4"));
    CHECK(logged(t, "open").size() == 7);
    CHECK(logged(t, "close") == logged(t, "open"));
}

TEST(no_power_pmu_is_not_found_with_the_alternatives) {
    Layout l = intel_two_sockets();
    const Tree t = make_tree(l);
    Options o({{"perf_event_root", t.dir + "/elsewhere"}, {"sysfs_cpu_root", t.sys}, {"proc_root", t.proc}});
    std::string msg, fix;
    CHECK(error_of([&] { open_sensor("rapl-perf", o); }, &msg, &fix) == ErrorCategory::NotFound);
    CHECK(contains(msg, t.dir + "/elsewhere/power"));
    CHECK(contains(fix, "rapl-powercap") && contains(fix, "rapl-msr") && contains(fix, "daemon"));
}

TEST(a_kernel_refusing_the_event_is_unsupported) {
    const Tree t = make_tree(intel_two_sockets());
    ::setenv("FAKE_PERF_TYPE", "9", 1);  // the tree's type is not the running kernel's: ENOENT
    std::string msg;
    CHECK(error_of([&] { open_sensor("rapl-perf", options_of(t)); }, &msg) == ErrorCategory::Unsupported);
    CHECK(contains(msg, "type 42") && contains(msg, "No such file or directory"));
    ::setenv("FAKE_PERF_TYPE", "42", 1);
    ::setenv("FAKE_PERF_OPEN_ERRNO", "EINVAL", 1);
    CHECK(error_of([&] { open_sensor("rapl-perf", options_of(t)); }) == ErrorCategory::Unsupported);
    ::unsetenv("FAKE_PERF_OPEN_ERRNO");
}

TEST(events_that_are_not_joules_are_refused) {
    Layout l = intel_two_sockets();
    l.unit = "Watts";
    const Tree t = make_tree(l);
    std::string msg;
    CHECK(error_of([&] { open_sensor("rapl-perf", options_of(t)); }, &msg) == ErrorCategory::Unsupported);
    CHECK(contains(msg, "energy-pkg.unit is 'Watts'"));
    Layout bad = intel_two_sockets();
    bad.scale = "zero";
    const Tree t2 = make_tree(bad);
    CHECK(error_of([&] { open_sensor("rapl-perf", options_of(t2)); }) == ErrorCategory::Unsupported);
}

TEST(read_failures_are_retry_or_gone_with_the_event_named) {
    const Tree t = make_tree(intel_two_sockets());
    auto s = open_sensor("rapl-perf", options_of(t));
    ::setenv("FAKE_PERF_READ_FAIL", "EIO", 1);
    auto r = timed_poll(*s).r;
    CHECK(r[0].status == PollStatus::Retry);
    CHECK(contains(s->last_error(), "energy-ram on CPU 2"));  // the last channel that failed
    ::setenv("FAKE_PERF_READ_FAIL", "eof", 1);  // perf_read of an event in error state
    r = timed_poll(*s).r;
    CHECK(r[0].status == PollStatus::Gone && r[6].status == PollStatus::Gone);
    ::unsetenv("FAKE_PERF_READ_FAIL");
    r = timed_poll(*s).r;
    CHECK(r[0].status == PollStatus::Ok);
}

namespace {
// The path of a loaded library whose file name starts with `prefix` ("libasan.so"), or "".
std::string loaded_library(const std::string& prefix) {
    std::istringstream maps(read_text("/proc/self/maps"));
    std::string line;
    while (std::getline(maps, line)) {
        const auto slash = line.rfind('/');
        if (slash == std::string::npos) continue;
        if (line.compare(slash + 1, prefix.size(), prefix) == 0) return line.substr(line.find('/'));
    }
    return "";
}
}  // namespace

int main(int, char** argv) {
    if (::dlsym(RTLD_DEFAULT, "fake_perf_loaded") == nullptr) {
        if (std::getenv("GREENPROBE_TEST_FAKE_PERF_REEXEC")) {
            std::fprintf(stderr, "test_rapl_perf: %s did not load under LD_PRELOAD\n", FAKE_PERF_PATH);
            return 1;
        }
        // ASan's runtime must be first in the initial library list; the fake follows it.
        std::string preload = loaded_library("libasan.so");
        preload += (preload.empty() ? "" : ":") + std::string(FAKE_PERF_PATH);
        if (const char* old = std::getenv("LD_PRELOAD"); old && *old) preload += std::string(":") + old;
        ::setenv("LD_PRELOAD", preload.c_str(), 1);
        ::setenv("GREENPROBE_TEST_FAKE_PERF_REEXEC", "1", 1);
        ::execv("/proc/self/exe", argv);
        std::perror("test_rapl_perf: execv");
        return 1;
    }
    return check::run_all();
}
