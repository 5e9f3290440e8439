// Sensors against stand-ins built here: a powercap tree and MSR files in a temp folder, and the
// fake NVML library built by CMake and loaded through the real dlopen path.
#include <dlfcn.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <fstream>
#include <map>
#include <set>
#include <stdexcept>
#include <string>

#include "check.hpp"
#include "fixtures.hpp"
#include "greenprobe/clock.hpp"
#include "greenprobe/gpu_usage.hpp"
#include "greenprobe/rapl_domains.hpp"
#include "greenprobe/registry.hpp"
#include "cpu_info.hpp"
#include "nvml_stamp.hpp"

using namespace greenprobe;
using fixtures::temp_dir;
using fixtures::mkdirs;
using fixtures::write_file;
using fixtures::error_of;
using fixtures::contains;

namespace {

// The plain-file stand-in for /dev/cpu/N/msr. Intel's registers are >= 8 apart, so they sit at
// offset = register as on the real device; AMD's are adjacent and use offset = 8 x register
// (msr_offset_scale=8).
void write_msr(const std::string& path, uint64_t reg, uint64_t value, uint64_t scale = 1) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT, 0644);
    if (fd < 0) throw std::runtime_error("open " + path);
    if (::pwrite(fd, &value, sizeof value, static_cast<off_t>(reg * scale)) != sizeof value) throw std::runtime_error("pwrite");
    ::close(fd);
}

std::vector<Reading> poll(Sensor& s) {
    std::vector<Reading> r(s.channels().size());
    s.poll(r);
    return r;
}

ErrorCategory category_of(const std::function<void()>& fn) {
    try {
        fn();
    } catch (const SensorError& e) {
        return e.category();
    }
    throw std::runtime_error("no SensorError thrown");
}

// --- powercap ---------------------------------------------------------------------------------

std::string make_powercap(uint64_t max_uj) {
    const std::string root = temp_dir() + "/powercap";
    const char* zones[][2] = {{"intel-rapl:0", "package-0"}, {"intel-rapl:0:0", "core"}, {"intel-rapl:0:1", "dram"},
                              {"intel-rapl:1", "package-1"}, {"intel-rapl:1:0", "core"}, {"intel-rapl-mmio:0", "package-0"}};
    for (auto& z : zones) {
        const std::string dir = root + "/" + z[0];
        mkdirs(dir);
        write_file(dir + "/name", std::string(z[1]) + "\n");
        write_file(dir + "/max_energy_range_uj", std::to_string(max_uj) + "\n");
        write_file(dir + "/energy_uj", "1000\n");
    }
    return root;
}

// The parents a RAPL sensor stated are the ones its domains' names give (rapl::parent_by_name, what
// Python's topology asks the core for a recording without them): one rule.
void check_names_give_the_stated_parents(const Sensor& s) {
    std::vector<std::string> domains;
    for (const auto& c : s.channels()) domains.push_back(c.domain);
    for (const auto& c : s.channels()) {
        if (rapl::parent_by_name(c.domain, domains) != c.parent_domain) {
            std::printf("  %s: stated parent '%s', by name '%s'\n", c.domain.c_str(), c.parent_domain.c_str(),
                        rapl::parent_by_name(c.domain, domains).c_str());
            ++check::failures();
        }
    }
}

}  // namespace

TEST(powercap_names_zones_and_skips_mmio) {
    const std::string root = make_powercap(1000000);
    auto s = open_sensor("rapl-powercap", Options({{"powercap_root", root}}));
    const auto& ch = s->channels();
    REQUIRE(ch.size() == 5);
    CHECK(ch[0].domain == "package-0");
    CHECK(ch[1].domain == "core-0");  // "core" appears in both packages
    CHECK(ch[2].domain == "dram");
    CHECK(ch[3].domain == "package-1");
    CHECK(ch[4].domain == "core-1");
}

TEST(powercap_parents_on_one_socket_without_psys) {
    const std::string root = make_powercap(1000000);
    auto s = open_sensor("rapl-powercap", Options({{"powercap_root", root}}));
    const auto& ch = s->channels();
    REQUIRE(ch.size() == 5);
    CHECK(ch[0].parent_domain.empty());            // package-0
    CHECK(ch[1].parent_domain == "package-0");     // core-0
    CHECK(ch[2].parent_domain.empty());            // dram: listed under the package, not inside its energy
    CHECK(ch[3].parent_domain.empty());            // package-1
    CHECK(ch[4].parent_domain == "package-1");     // core-1
    check_names_give_the_stated_parents(*s);
}

TEST(powercap_a_zone_whose_number_does_not_read_is_skipped) {
    // atoi read "intel-rapl:x" as package 0 and "intel-rapl:1y" as 1; neither is a zone the kernel names
    const std::string root = make_powercap(1000000);
    for (const char* zone : {"intel-rapl:x", "intel-rapl:1y", "intel-rapl:0:z", "intel-rapl:-1", "intel-rapl:"}) {
        const std::string dir = root + "/" + zone;
        mkdirs(dir);
        write_file(dir + "/name", "psys\n");
        write_file(dir + "/max_energy_range_uj", "1000000\n");
        write_file(dir + "/energy_uj", "1000\n");
    }
    auto s = open_sensor("rapl-powercap", Options({{"powercap_root", root}}));
    std::set<std::string> domains;
    for (const auto& c : s->channels()) domains.insert(c.domain);
    CHECK((domains == std::set<std::string>{"package-0", "core-0", "dram", "package-1", "core-1"}));
}

TEST(powercap_two_sockets_with_psys_nest_every_domain) {
    const std::string root = temp_dir() + "/powercap";
    const char* zones[][2] = {{"intel-rapl:0", "package-0"}, {"intel-rapl:0:0", "core"}, {"intel-rapl:0:1", "dram"},
                              {"intel-rapl:1", "package-1"}, {"intel-rapl:1:0", "core"}, {"intel-rapl:1:1", "dram"},
                              {"intel-rapl:2", "psys"}};
    for (auto& z : zones) {
        const std::string dir = root + "/" + z[0];
        mkdirs(dir);
        write_file(dir + "/name", std::string(z[1]) + "\n");
        write_file(dir + "/max_energy_range_uj", "262143328850\n");
        write_file(dir + "/energy_uj", "1000\n");
    }
    auto s = open_sensor("rapl-powercap", Options({{"powercap_root", root}}));
    std::map<std::string, std::string> parent;
    for (const auto& c : s->channels()) parent[c.domain] = c.parent_domain;
    const std::map<std::string, std::string> want = {
        {"package-0", "psys"}, {"core-0", "package-0"}, {"dram-0", "psys"}, {"package-1", "psys"},
        {"core-1", "package-1"}, {"dram-1", "psys"}, {"psys", ""}};
    CHECK(s->channels().size() == want.size());
    CHECK(parent == want);
    check_names_give_the_stated_parents(*s);
}

TEST(powercap_unwraps_with_the_zone_range) {
    const std::string root = make_powercap(999999);
    const std::string f = root + "/intel-rapl:0/energy_uj";
    write_file(f, "999000\n");
    auto s = open_sensor("rapl-powercap", Options({{"powercap_root", root}}));
    CHECK_NEAR(s->channels()[0].wrap_j, 1.0, 1e-12);  // 0..999999 µJ: one range is 1 J
    CHECK(s->channels()[0].max_power_w == 1000.0);
    CHECK(poll(*s)[0].energy_j_or_power_w == 0.0);
    write_file(f, "999900\n");
    CHECK_NEAR(poll(*s)[0].energy_j_or_power_w, 900e-6, 1e-12);
    write_file(f, "100\n");  // wrapped: 999900 -> 999999 (99) -> 0 (1) -> 100 (100)
    CHECK_NEAR(poll(*s)[0].energy_j_or_power_w, 1100e-6, 1e-12);
    write_file(f, "0000500000\n");  // leading zeros are decimal, not octal
    CHECK_NEAR(poll(*s)[0].energy_j_or_power_w, (1100 + 499900) * 1e-6, 1e-12);
}

TEST(powercap_missing_root_is_not_found) {
    CHECK(category_of([] { open_sensor("rapl-powercap", Options({{"powercap_root", "/nonexistent/powercap"}})); }) ==
          ErrorCategory::NotFound);
}

TEST(powercap_unreadable_energy_is_permission) {
    if (::geteuid() == 0) {
        std::printf("  (running as root: permission bits are not enforced, checking the message path only)\n");
    }
    const std::string root = make_powercap(1000);
    const std::string f = root + "/intel-rapl:0/energy_uj";
    ::chmod(f.c_str(), 0000);
    if (::geteuid() != 0) {
        CHECK(category_of([&] { open_sensor("rapl-powercap", Options({{"powercap_root", root}})); }) ==
              ErrorCategory::Permission);
    }
    try {
        (void)errno_error(EACCES, "x", f, "fix");
        CHECK(errno_error(EACCES, "x", f, "fix").category() == ErrorCategory::Permission);
    } catch (...) {
        CHECK(false);
    }
}

// --- MSR --------------------------------------------------------------------------------------

namespace {
struct FakeCpu {
    std::string dir, tmpl, proc, sys;
};

FakeCpu make_cpu(const std::string& vendor, int packages, int cpus_per_package, bool smt) {
    FakeCpu c;
    c.dir = temp_dir();
    c.tmpl = c.dir + "/dev/cpu/{cpu}/msr";
    c.proc = c.dir + "/proc";
    c.sys = c.dir + "/sys/devices/system/cpu";
    mkdirs(c.proc);
    std::string cpuinfo;
    const int total = packages * cpus_per_package;
    for (int cpu = 0; cpu < total; ++cpu) {
        cpuinfo += "processor\t: " + std::to_string(cpu) + "\nvendor_id\t: " + vendor +
                   "\ncpu family\t: " + (vendor == "GenuineIntel" ? "6" : "25") + "\nmodel\t\t: 85\n\n";
        const std::string topo = c.sys + "/cpu" + std::to_string(cpu) + "/topology";
        mkdirs(topo);
        const int pkg = cpu / cpus_per_package;
        const int local = cpu % cpus_per_package;
        write_file(topo + "/physical_package_id", std::to_string(pkg) + "\n");
        write_file(topo + "/core_id", std::to_string(smt ? local / 2 : local) + "\n");
        mkdirs(c.dir + "/dev/cpu/" + std::to_string(cpu));
    }
    write_file(c.proc + "/cpuinfo", cpuinfo);
    return c;
}

std::string msr_of(const FakeCpu& c, int cpu) { return c.dir + "/dev/cpu/" + std::to_string(cpu) + "/msr"; }

Options cpu_options(const FakeCpu& c) {
    return Options({{"msr_path", c.tmpl}, {"proc_root", c.proc}, {"sysfs_cpu_root", c.sys}});
}
}  // namespace

TEST(msr_intel_domains_units_and_wrap) {
    FakeCpu c = make_cpu("GenuineIntel", 1, 2, false);
    const std::string f = msr_of(c, 0);
    write_msr(f, 0x606, 0xA0E03);  // ESU 14 in the register
    write_msr(f, 0x611, 0xFFFFFF00ull);
    write_msr(f, 0x639, 0x1000);
    write_msr(f, 0x619, 0x2000);  // DRAM on a Skylake-X (model 85): fixed 2^-16 J
    // 0x641 and 0x64D stay zero: absent
    auto s = open_sensor("rapl-msr", cpu_options(c));
    const auto& ch = s->channels();
    REQUIRE(ch.size() == 3);
    CHECK(ch[0].domain == "package-0" && ch[1].domain == "core" && ch[2].domain == "dram");
    CHECK_NEAR(ch[0].resolution_j, 1.0 / 16384.0, 0.0);
    CHECK_NEAR(ch[2].resolution_j, 1.0 / 65536.0, 0.0);
    CHECK_NEAR(ch[0].wrap_j, 4294967296.0 / 16384.0, 0.0);  // 2^32 counts of the domain's unit
    CHECK_NEAR(ch[2].wrap_j, 4294967296.0 / 65536.0, 0.0);
    CHECK(ch[0].max_power_w == 1000.0 && ch[2].max_power_w == 1000.0);
    write_msr(f, 0x611, 0x0000010000000010ull);  // wrapped (upper bits are not counter bits)
    write_msr(f, 0x619, 0x2000 + 65536);
    auto r = poll(*s);
    CHECK_NEAR(r[0].energy_j_or_power_w, (0x100 + 0x10) / 16384.0, 1e-15);
    CHECK_NEAR(r[2].energy_j_or_power_w, 1.0, 1e-15);
    CHECK(r[1].energy_j_or_power_w == 0.0);
}

TEST(msr_amd_sums_each_core_once) {
    FakeCpu c = make_cpu("AuthenticAMD", 1, 4, true);  // 4 CPUs, 2 physical cores
    for (int cpu = 0; cpu < 4; ++cpu) {
        write_msr(msr_of(c, cpu), 0xC0010299u, 0xA1003, 8);
        write_msr(msr_of(c, cpu), 0xC001029Bu, 5000, 8);
        write_msr(msr_of(c, cpu), 0xC001029Au, 100, 8);
    }
    Options o({{"msr_path", c.tmpl}, {"proc_root", c.proc}, {"sysfs_cpu_root", c.sys}, {"msr_offset_scale", "8"}});
    auto s = open_sensor("rapl-msr", o);
    REQUIRE(s->channels().size() == 2);
    CHECK(s->channels()[1].domain == "core");
    // Each physical core's counter advances by 65536 (1 J); the SMT siblings (cpu1, cpu3) are not read.
    write_msr(msr_of(c, 0), 0xC001029Au, 100 + 65536, 8);
    write_msr(msr_of(c, 2), 0xC001029Au, 100 + 65536, 8);
    write_msr(msr_of(c, 1), 0xC001029Au, 100 + 10 * 65536, 8);
    write_msr(msr_of(c, 0), 0xC001029Bu, 5000 + 3 * 65536, 8);
    auto r = poll(*s);
    CHECK_NEAR(r[0].energy_j_or_power_w, 3.0, 1e-12);
    CHECK_NEAR(r[1].energy_j_or_power_w, 2.0, 1e-12);
}

TEST(msr_two_packages_get_suffixed_domains) {
    FakeCpu c = make_cpu("GenuineIntel", 2, 2, false);
    for (int cpu : {0, 2}) {
        write_msr(msr_of(c, cpu), 0x606, 0xA1003);
        write_msr(msr_of(c, cpu), 0x611, 1);
        write_msr(msr_of(c, cpu), 0x639, 1);
    }
    auto s = open_sensor("rapl-msr", cpu_options(c));
    const auto& ch = s->channels();
    REQUIRE(ch.size() == 4);
    CHECK(ch[0].domain == "package-0" && ch[1].domain == "core-0" && ch[2].domain == "package-1" &&
          ch[3].domain == "core-1");
}

TEST(msr_two_sockets_with_psys_nest_every_domain) {
    FakeCpu c = make_cpu("GenuineIntel", 2, 2, false);
    for (int cpu : {0, 2}) {
        write_msr(msr_of(c, cpu), 0x606, 0xA1003);
        write_msr(msr_of(c, cpu), 0x611, 1);
        write_msr(msr_of(c, cpu), 0x639, 1);
        write_msr(msr_of(c, cpu), 0x641, 1);
        write_msr(msr_of(c, cpu), 0x619, 1);
        write_msr(msr_of(c, cpu), 0x64D, 1);  // platform-wide: read from the first package only
    }
    auto s = open_sensor("rapl-msr", cpu_options(c));
    std::map<std::string, std::string> parent;
    for (const auto& ch : s->channels()) parent[ch.domain] = ch.parent_domain;
    const std::map<std::string, std::string> want = {
        {"package-0", "psys"}, {"core-0", "package-0"}, {"uncore-0", "package-0"}, {"dram-0", "psys"},
        {"package-1", "psys"}, {"core-1", "package-1"}, {"uncore-1", "package-1"}, {"dram-1", "psys"},
        {"psys", ""}};
    CHECK(s->channels().size() == want.size());
    CHECK(parent == want);
    check_names_give_the_stated_parents(*s);
}

TEST(msr_without_psys_packages_and_dram_are_top_level) {
    FakeCpu c = make_cpu("GenuineIntel", 1, 2, false);
    const std::string f = msr_of(c, 0);
    write_msr(f, 0x606, 0xA1003);
    write_msr(f, 0x611, 1);
    write_msr(f, 0x639, 1);
    write_msr(f, 0x619, 1);
    auto s = open_sensor("rapl-msr", cpu_options(c));
    const auto& ch = s->channels();
    REQUIRE(ch.size() == 3);
    CHECK(ch[0].domain == "package-0" && ch[0].parent_domain.empty());
    CHECK(ch[1].domain == "core" && ch[1].parent_domain == "package-0");
    CHECK(ch[2].domain == "dram" && ch[2].parent_domain.empty());
    check_names_give_the_stated_parents(*s);
}

TEST(cpu_info_reads_decimal_numbers_and_leaves_out_what_does_not_read) {
    const std::string dir = temp_dir();
    write_file(dir + "/cpuinfo", "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 0x55\n");
    const CpuIdentity id = read_cpu_identity(dir);
    CHECK(id.family == 6);
    CHECK(id.model == -1);  // unknown, as without the line (atoi read 0)
    write_file(dir + "/cpuinfo", "processor\t: 0\ncpu family\t: 25\nmodel\t\t: 017\n");
    CHECK(read_cpu_identity(dir).family == 25 && read_cpu_identity(dir).model == 17);  // decimal, not octal
    const std::string sys = dir + "/cpu";
    auto cpu = [&](int n, const char* package, const char* core) {
        const std::string topo = sys + "/cpu" + std::to_string(n) + "/topology";
        mkdirs(topo);
        write_file(topo + "/physical_package_id", package);
        if (core) write_file(topo + "/core_id", core);
    };
    cpu(0, "0\n", "0\n");
    cpu(1, "1\n", "07\n");
    cpu(2, "1junk\n", "2\n");  // atoi put it in package 1
    cpu(3, "0\n", "x\n");      // atoi gave it core 0
    cpu(4, "-1\n", nullptr);    // a package id the kernel may write: -1 (unknown)
    const CpuTopology topo = read_cpu_topology(sys);
    CHECK((topo.package_cpus == std::map<int, std::vector<int>>{{-1, {4}}, {0, {0, 3}}, {1, {1}}}) ||
          (topo.package_cpus == std::map<int, std::vector<int>>{{-1, {4}}, {0, {3, 0}}, {1, {1}}}));
    CHECK((topo.core_of_cpu == std::map<int, int>{{0, 0}, {1, 7}, {3, 3}, {4, 4}}));
    CHECK(!topo.assumed);
}

TEST(msr_errors_name_the_problem) {
    FakeCpu c = make_cpu("GenuineIntel", 1, 1, false);
    // No msr file at all: the module is not loaded.
    CHECK(category_of([&] { open_sensor("rapl-msr", cpu_options(c)); }) == ErrorCategory::NotFound);
    // Unknown vendor.
    FakeCpu v = make_cpu("CentaurHauls", 1, 1, false);
    CHECK(category_of([&] { open_sensor("rapl-msr", cpu_options(v)); }) == ErrorCategory::Unsupported);
    // Vendor override.
    write_msr(msr_of(v, 0), 0x606, 0xA1003);
    write_msr(msr_of(v, 0), 0x611, 7);
    Options o({{"msr_path", v.tmpl}, {"proc_root", v.proc}, {"sysfs_cpu_root", v.sys}, {"cpu_vendor", "intel"}});
    CHECK(open_sensor("rapl-msr", o)->channels().size() == 1);
    // A register file that ends before the unit register reads short, like EIO on a real MSR.
    FakeCpu s = make_cpu("AuthenticAMD", 1, 1, false);
    write_msr(msr_of(s, 0), 0x10, 1);
    CHECK(category_of([&] { open_sensor("rapl-msr", cpu_options(s)); }) == ErrorCategory::Unsupported);
    // Only the device (1) and register-dump (8) layouts exist.
    Options bad({{"msr_path", s.tmpl}, {"proc_root", s.proc}, {"sysfs_cpu_root", s.sys}, {"msr_offset_scale", "4"}});
    CHECK(category_of([&] { open_sensor("rapl-msr", bad); }) == ErrorCategory::Config);
}

// --- NVML -------------------------------------------------------------------------------------

namespace {
const char* const kVisibility[] = {"CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER"};

// Which GPUs the process sees, for one scope: the variables given, the others unset (before and after).
class GpuEnv {
  public:
    explicit GpuEnv(std::initializer_list<std::pair<const char*, std::string>> vars, const char* fake_gpus = "4") {
        clear();
        ::setenv("FAKE_NVML_GPUS", fake_gpus, 1);
        for (const auto& [k, v] : vars) ::setenv(k, v.c_str(), 1);
    }
    ~GpuEnv() {
        clear();
        ::unsetenv("FAKE_NVML_GPUS");
        ::unsetenv("FAKE_NVML_MIG");
    }
    GpuEnv(const GpuEnv&) = delete;
    GpuEnv& operator=(const GpuEnv&) = delete;
    static void clear() {
        for (const char* k : kVisibility) ::unsetenv(k);
    }
};

std::string fake_uuid(unsigned i) {  // as tests/fixtures/fake_nvml.c names GPU i
    char buf[64];
    std::snprintf(buf, sizeof buf, "GPU-%08x-0000-0000-0000-%012x", 0x11111111u * (i + 1), i);
    return buf;
}

std::string fake_mig(unsigned gpu, unsigned k) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "MIG-%08x-1111-1111-1111-%012x", 0x11111111u * (gpu + 1), k);
    return buf;
}

std::unique_ptr<Sensor> open_fake_nvml(std::map<std::string, std::string> options = {}) {
    options["nvml_library"] = FAKE_NVML_PATH;
    return open_sensor("nvml", Options(options));
}

// The GPU domains of a sensor, in channel order, each once.
std::vector<std::string> gpu_domains(const Sensor& s) {
    std::vector<std::string> out;
    for (const auto& c : s.channels()) {
        if (out.empty() || out.back() != c.domain) out.push_back(c.domain);
    }
    return out;
}

using Domains = std::vector<std::string>;
}  // namespace

TEST(nvml_every_gpu_by_default_with_uuid_and_bus_id) {
    GpuEnv env({});
    auto s = open_fake_nvml();
    CHECK(gpu_domains(*s) == (Domains{"gpu0", "gpu1", "gpu2", "gpu3"}));
    for (const auto& c : s->channels()) {
        const unsigned i = static_cast<unsigned>(std::stoul(c.domain.substr(3)));
        CHECK(c.device_uuid == fake_uuid(i));
        CHECK(!c.shared && c.parent_domain.empty());
    }
    CHECK(s->channels()[0].device_bus_id == "00000000:18:00.0");
    CHECK(s->channels()[7].device_bus_id == "00000000:78:00.0");
    const auto info = s->info();
    CHECK(info.at("gpu2_uuid") == fake_uuid(2));
    CHECK(info.at("gpu2_pci_bus_id") == "00000000:58:00.0");
    CHECK(info.at("visible_devices_source") == "default");
    CHECK(contains(info.at("visible_devices"), "gpu0 gpu1 gpu2 gpu3"));
    CHECK(info.count("gpu0_shared_with_mig") == 0);
}

TEST(nvml_cuda_visible_devices_by_uuid_measures_exactly_that_gpu) {
    GpuEnv env({{"CUDA_VISIBLE_DEVICES", fake_uuid(2)}, {"FAKE_NVML_BASE_W", "100"}});
    auto s = open_fake_nvml();
    CHECK(gpu_domains(*s) == Domains{"gpu2"});  // its NVML index
    REQUIRE(s->channels().size() == 2);
    for (const auto& c : s->channels()) CHECK(c.device_uuid == fake_uuid(2) && c.device_bus_id == "00000000:58:00.0");
    CHECK_NEAR(poll(*s)[1].energy_j_or_power_w, 300.0, 1e-9);  // the fake's GPU i draws (i+1) x 100 W: the right device is read
    const auto info = s->info();
    CHECK(info.at("visible_devices_source") == "CUDA_VISIBLE_DEVICES");
    CHECK(info.at("cuda_visible_devices_mapping") == "exact: by UUID");
    CHECK(contains(info.at("visible_devices"), "gpu2 from CUDA_VISIBLE_DEVICES='" + fake_uuid(2) + "'"));
    CHECK(info.count("gpu0_uuid") == 0);
    ::unsetenv("FAKE_NVML_BASE_W");
}

TEST(nvml_cuda_visible_devices_by_unique_uuid_prefix) {
    {
        GpuEnv env({{"CUDA_VISIBLE_DEVICES", "GPU-4444"}});
        CHECK(gpu_domains(*open_fake_nvml()) == Domains{"gpu3"});
    }
    GpuEnv env({{"CUDA_VISIBLE_DEVICES", "GPU-"}});  // every UUID starts so
    const SensorError e = error_of([] { open_fake_nvml(); });
    CHECK(e.category() == ErrorCategory::Config && contains(e.what(), "prefix of several"));
}

TEST(nvml_cuda_visible_devices_by_index_is_ambiguous_unless_pci_bus_order) {
    {
        GpuEnv env({{"CUDA_VISIBLE_DEVICES", "2"}});
        auto s = open_fake_nvml();
        CHECK(gpu_domains(*s) == Domains{"gpu2"});
        CHECK(s->channels()[0].device_uuid == fake_uuid(2));
        CHECK(s->info().at("cuda_visible_devices_mapping").rfind("ambiguous: CUDA_DEVICE_ORDER is not PCI_BUS_ID", 0) == 0);
    }
    {
        GpuEnv env({{"CUDA_VISIBLE_DEVICES", "2"}, {"CUDA_DEVICE_ORDER", "PCI_BUS_ID"}});
        auto s = open_fake_nvml();
        CHECK(gpu_domains(*s) == Domains{"gpu2"});
        CHECK(s->info().at("cuda_visible_devices_mapping").rfind("exact: CUDA_DEVICE_ORDER=PCI_BUS_ID", 0) == 0);
    }
    GpuEnv env({{"CUDA_VISIBLE_DEVICES", "0"}}, "1");  // one GPU: no order to get wrong
    CHECK(open_fake_nvml()->info().at("cuda_visible_devices_mapping") == "exact: NVML sees one GPU");
}

TEST(nvml_cuda_visible_devices_list_and_cuda_stopping_at_minus_one) {
    {
        GpuEnv env({{"CUDA_VISIBLE_DEVICES", "3, GPU-22222222-0000-0000-0000-000000000001"}, {"CUDA_DEVICE_ORDER", "PCI_BUS_ID"}});
        auto s = open_fake_nvml();
        CHECK(gpu_domains(*s) == (Domains{"gpu1", "gpu3"}));  // NVML order
        CHECK(s->channels()[2].device_uuid == fake_uuid(3));
    }
    GpuEnv env({{"CUDA_VISIBLE_DEVICES", "1,-1,3"}});
    auto s = open_fake_nvml();
    CHECK(gpu_domains(*s) == Domains{"gpu1"});
    CHECK(contains(s->info().at("visible_devices_note"), "'-1'"));
}

TEST(nvml_no_visible_gpu_is_a_clear_error) {
    for (const char* value : {"", "-1"}) {
        GpuEnv env({{"CUDA_VISIBLE_DEVICES", value}});
        const SensorError e = error_of([] { open_fake_nvml(); });
        CHECK(e.category() == ErrorCategory::NotFound);
        CHECK(contains(e.what(), "CUDA_VISIBLE_DEVICES='" + std::string(value) + "' makes no GPU visible"));
        CHECK(contains(e.fix(), "gpus=all"));
    }
}

TEST(nvml_a_listed_gpu_nvml_lacks_names_it_and_the_fix) {
    {
        GpuEnv env({{"CUDA_VISIBLE_DEVICES", "GPU-99999999-0000-0000-0000-000000000000"}});
        const SensorError e = error_of([] { open_fake_nvml(); });
        CHECK(e.category() == ErrorCategory::NotFound);
        CHECK(contains(e.what(), "GPU-99999999") && contains(e.what(), fake_uuid(3)));
        CHECK(contains(e.fix(), "nvidia-smi -L"));
    }
    {
        GpuEnv env({{"CUDA_VISIBLE_DEVICES", "0,7"}});
        const SensorError e = error_of([] { open_fake_nvml(); });
        CHECK(e.category() == ErrorCategory::NotFound && contains(e.what(), "GPU 7"));
    }
    GpuEnv env({{"CUDA_VISIBLE_DEVICES", "first"}});
    CHECK(error_of([] { open_fake_nvml(); }).category() == ErrorCategory::Config);
}

TEST(nvml_gpus_option_overrides_the_environment) {
    GpuEnv env({{"CUDA_VISIBLE_DEVICES", ""}});
    auto all = open_fake_nvml({{"gpus", "all"}});
    CHECK(gpu_domains(*all) == (Domains{"gpu0", "gpu1", "gpu2", "gpu3"}));
    CHECK(all->info().at("visible_devices_source") == "option gpus");
    CHECK(gpu_domains(*open_fake_nvml({{"gpus", "0,2"}})) == (Domains{"gpu0", "gpu2"}));
    ::setenv("CUDA_VISIBLE_DEVICES", "0", 1);
    CHECK(gpu_domains(*open_fake_nvml({{"gpus", fake_uuid(1)}})) == Domains{"gpu1"});
    CHECK(error_of([] { open_fake_nvml({{"gpus", "4"}}); }).category() == ErrorCategory::NotFound);
    CHECK(error_of([] { open_fake_nvml({{"gpus", "0,,1"}}); }).category() == ErrorCategory::Config);
}

TEST(nvml_mig_instance_is_measured_as_its_whole_gpu_and_flagged_shared) {
    for (const std::string& mig : {fake_mig(1, 1), "MIG-" + fake_uuid(1) + "/1/0"}) {
        GpuEnv env({{"CUDA_VISIBLE_DEVICES", mig}, {"FAKE_NVML_MIG", "1"}});
        auto s = open_fake_nvml();
        CHECK(gpu_domains(*s) == Domains{"gpu1"});
        for (const auto& c : s->channels()) CHECK(c.shared && c.device_uuid == fake_uuid(1));
        CHECK(contains(s->info().at("gpu1_shared_with_mig"), mig));
    }
    GpuEnv env({{"CUDA_VISIBLE_DEVICES", fake_mig(2, 0)}, {"FAKE_NVML_MIG", "1"}});  // GPU 2 has no MIG instances
    const SensorError e = error_of([] { open_fake_nvml(); });
    CHECK(e.category() == ErrorCategory::NotFound && contains(e.what(), fake_mig(2, 0)));
}

TEST(nvml_container_runtime_visible_devices) {
    {
        GpuEnv env({{"NVIDIA_VISIBLE_DEVICES", "all"}});
        CHECK(gpu_domains(*open_fake_nvml()).size() == 4);
    }
    {
        GpuEnv env({{"NVIDIA_VISIBLE_DEVICES", "void"}});
        auto s = open_fake_nvml();
        CHECK(gpu_domains(*s).size() == 4 && contains(s->info().at("visible_devices_note"), "void"));
    }
    {
        GpuEnv env({{"NVIDIA_VISIBLE_DEVICES", "none"}});
        CHECK(error_of([] { open_fake_nvml(); }).category() == ErrorCategory::NotFound);
    }
    {
        GpuEnv env({{"NVIDIA_VISIBLE_DEVICES", fake_uuid(3)}});
        CHECK(gpu_domains(*open_fake_nvml()) == Domains{"gpu3"});
    }
    {
        // A container given host GPUs 2 and 3: NVML inside sees two, numbered 0 and 1.
        GpuEnv env({{"NVIDIA_VISIBLE_DEVICES", "2,3"}}, "2");
        auto s = open_fake_nvml();
        CHECK(gpu_domains(*s) == (Domains{"gpu0", "gpu1"}));
        CHECK(contains(s->info().at("nvidia_visible_devices_mapping"), "sees exactly the 2 GPUs listed"));
    }
    {
        GpuEnv env({{"NVIDIA_VISIBLE_DEVICES", "1:0"}});  // the toolkit's <gpu>:<mig> form, on the host
        auto s = open_fake_nvml();
        CHECK(gpu_domains(*s) == Domains{"gpu1"} && s->channels()[0].shared);
    }
    GpuEnv env({{"NVIDIA_VISIBLE_DEVICES", "all"}, {"CUDA_VISIBLE_DEVICES", "0"}});  // CUDA's wins
    CHECK(gpu_domains(*open_fake_nvml()) == Domains{"gpu0"});
}

TEST(nvml_loads_the_fake_library_and_reads_fields) {
    GpuEnv::clear();  // every GPU the fake has, whatever this process was given
    ::setenv("FAKE_NVML_GPUS", "2", 1);
    ::setenv("FAKE_NVML_UPDATE_MS", "20", 1);
    ::setenv("FAKE_NVML_BASE_W", "100", 1);
    ::unsetenv("FAKE_NVML_NO_FIELDS");
    auto s = open_sensor("nvml", Options({{"nvml_library", FAKE_NVML_PATH}}));
    const auto& ch = s->channels();
    REQUIRE(ch.size() == 4);
    CHECK(ch[0].domain == "gpu0" && ch[0].quantity == Quantity::EnergyCounter);
    CHECK(ch[1].domain == "gpu0" && ch[1].quantity == Quantity::Power);
    CHECK(ch[3].domain == "gpu1");
    auto r = poll(*s);
    CHECK_NEAR(r[1].energy_j_or_power_w, 100.0, 1e-9);
    CHECK_NEAR(r[3].energy_j_or_power_w, 200.0, 1e-9);
    CHECK(r[0].energy_j_or_power_w > 123456.0);  // counter since "driver load"
    // the fake is a Hopper: instant power averages ~25 ms, stated as 18-27 ms
    CHECK(s->info().at("gpu0_power_source") == "field 186 (instant), averaging ~25 ms (Hopper)");
    CHECK(ch[1].averaging_window_ns == 25000000 && ch[1].averaging_window_min_ns == 18000000 &&
          ch[1].averaging_window_max_ns == 27000000);
    CHECK(ch[0].max_power_w == 2000.0 && ch[0].wrap_j == 0.0);  // a 64-bit mJ counter never wraps
    for (const auto& c : ch) CHECK(c.parent_domain.empty());  // GPUs are top-level domains
    ::unsetenv("FAKE_NVML_GPUS");
}

TEST(nvml_falls_back_without_field_values) {
    GpuEnv::clear();  // every GPU the fake has, whatever this process was given
    ::setenv("FAKE_NVML_NO_FIELDS", "1", 1);
    auto s = open_sensor("nvml", Options({{"nvml_library", FAKE_NVML_PATH}}));
    CHECK(s->channels().size() == 2);
    CHECK(s->info().at("gpu0_power_source") == "nvmlDeviceGetPowerUsage, averaging 1 s (Ampere and newer)");
    CHECK(s->channels()[1].averaging_window_ns == 1000000000);
    // on GA100 the same call is the instant value
    ::setenv("FAKE_NVML_ARCH", "7", 1);
    ::setenv("FAKE_NVML_PCI_DEVICE", "0x20B0", 1);
    s = open_sensor("nvml", Options({{"nvml_library", FAKE_NVML_PATH}}));
    CHECK(s->channels()[1].averaging_window_ns == 25000000 && s->channels()[1].averaging_window_max_ns == 27000000);
    ::unsetenv("FAKE_NVML_ARCH");
    ::unsetenv("FAKE_NVML_PCI_DEVICE");
    ::unsetenv("FAKE_NVML_NO_FIELDS");
}

TEST(nvml_lost_gpu_is_gone_not_fatal) {
    GpuEnv::clear();  // every GPU the fake has, whatever this process was given
    ::setenv("FAKE_NVML_GPUS", "2", 1);
    ::setenv("FAKE_NVML_LOSE_GPU", "1", 1);
    ::setenv("FAKE_NVML_LOSE_AFTER_MS", "30", 1);
    auto s = open_sensor("nvml", Options({{"nvml_library", FAKE_NVML_PATH}}));
    ::usleep(40000);
    auto r = poll(*s);
    CHECK(r[0].status == PollStatus::Ok);
    CHECK(r[2].status == PollStatus::Gone);
    CHECK(r[3].status == PollStatus::Gone);
    CHECK(s->last_error().find("GPU is lost") != std::string::npos);
    ::unsetenv("FAKE_NVML_GPUS");
    ::unsetenv("FAKE_NVML_LOSE_GPU");
    ::unsetenv("FAKE_NVML_LOSE_AFTER_MS");
}

namespace {
// FAKE_NVML_* (and other) variables for one scope: set on entry, unset on exit.
class ScopedEnv {
  public:
    explicit ScopedEnv(std::initializer_list<std::pair<const char*, std::string>> vars) {
        GpuEnv::clear();  // every GPU the fake has, whatever this process was given
        for (const auto& [k, v] : vars) {
            ::setenv(k, v.c_str(), 1);
            names_.push_back(k);
        }
    }
    ~ScopedEnv() {
        for (const char* k : names_) ::unsetenv(k);
    }
    ScopedEnv(const ScopedEnv&) = delete;
    ScopedEnv& operator=(const ScopedEnv&) = delete;

  private:
    std::vector<const char*> names_;
};

// FAKE_NVML_STAMP_LOG: per nvmlDeviceGetFieldValues call, when the fake stamped it (CLOCK_MONOTONIC)
// and what it gave.
struct StampRecord {
    int64_t mono_ns, stamp_us, shifted;
};
std::vector<StampRecord> read_stamps(const std::string& path) {
    std::vector<StampRecord> out;
    std::FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) return out;
    StampRecord r{};
    while (std::fread(&r, sizeof r, 1, f) == 1) out.push_back(r);
    std::fclose(f);
    return out;
}
}  // namespace

TEST(nvml_stamp_map_maps_realtime_into_its_call_and_rejects_the_rest) {
    using nvml::ClockPair;
    using nvml::StampMap;
    // realtime = monotonic + 1.7e18 ns; clock pairs read in 40 ns; the call spans [1e9 + 40, 1.0005e9]
    const int64_t off = 1700000000000000000;
    const int64_t a = 1000000000, b = 1000500000;
    const ClockPair before{a, a + 20 + off, a + 40}, after{b, b + 20 + off, b + 40};
    const StampMap m(before, after);
    CHECK(!m.stepped());
    const auto us = [&](int64_t mono) { return static_cast<long long>((mono + off) / 1000); };
    CHECK(m.map(us(a + 250000)) == a + 250000);       // inside: exact (a whole µs)
    CHECK(m.map(us(a + 40)) == a);                    // truncated to the µs before the call: kept
    CHECK(m.map(us(a - 20000)) == 0);                 // 20 µs before the call
    CHECK(m.map(us(b + 20000)) == 0);                 // 20 µs after it
    CHECK(m.map(0) == 0 && m.map(-5) == 0 && m.map(9000000000000000000LL) == 0);  // garbage
    // the wall clock stepped 200 µs forward during the call: which side of the step a timestamp was
    // taken on is unknown, so none is placed (the mean offset would put this one inside the call)
    const ClockPair stepped_after{b, b + 20 + off + 200000, b + 40};
    const StampMap s2(before, stepped_after);
    CHECK(s2.stepped() && s2.map(us(a + 250000)) == 0);
    // a slow pair widens the slack by half its gap
    const ClockPair slow_before{a - 100000, a + off, a + 100000};
    const StampMap s3(slow_before, after);
    CHECK(!s3.stepped() && s3.map(us(a + 100000 - 50000)) != 0);
}

TEST(nvml_readings_are_dated_by_the_field_timestamp_inside_the_call) {
    // Two GPUs whose calls take 3 ms each, the values fetched at 80 % of the call: GPU 0's at
    // ~2.4 ms into the poll, GPU 1's at ~5.4 ms, while the poll's middle is ~3 ms for both (its
    // time would be 0.6 and 2.4 ms off).
    const std::string log = temp_dir() + "/stamps";
    ScopedEnv env({{"FAKE_NVML_GPUS", "2"}, {"FAKE_NVML_CALL_US", "3000"}, {"FAKE_NVML_STAMP_AT", "0.8"},
                   {"FAKE_NVML_STAMP_LOG", log}});
    auto s = open_fake_nvml();
    REQUIRE(s->channels().size() == 4);
    const int polls = 5;
    int matched = 0;
    for (int k = 0; k < polls; ++k) {
        const int64_t t0 = now_ns();
        const auto r = poll(*s);
        const int64_t t1 = now_ns();
        const auto stamps = read_stamps(log);
        REQUIRE(stamps.size() >= 2);
        const StampRecord& g0 = stamps[stamps.size() - 2];
        const StampRecord& g1 = stamps[stamps.size() - 1];
        // each reading at its own call's fetch (NVML stamps whole µs; the clock offset is read around
        // the call)
        for (int c = 0; c < 4; ++c) {
            const StampRecord& want = c < 2 ? g0 : g1;
            CHECK(r[c].t_ns >= t0 && r[c].t_ns <= t1);
            CHECK_NEAR(static_cast<double>(r[c].t_ns), static_cast<double>(want.mono_ns), 3000.0);
            if (std::llabs(r[c].t_ns - want.mono_ns) <= 3000) ++matched;
        }
        // one poll time cannot date both GPUs: their fetches are at least 80 % of a call apart
        // (the fake's sleeps only overshoot)
        CHECK(r[2].t_ns - r[0].t_ns >= 2400000 - 3000);
    }
    CHECK(matched == 4 * polls);
    const auto info = s->info();
    CHECK(info.at("timestamps_used") == std::to_string(4 * polls));
    CHECK(info.at("timestamps_rejected") == "0");
    CHECK(contains(info.at("reading_time"), "NVML's field timestamp"));
}

TEST(nvml_a_timestamp_outside_its_call_falls_back_to_the_poll_time_and_is_counted) {
    // Every second call's timestamps are garbage: an hour back (a wall clock stepped by NTP), or 2 ms
    // ahead (outside a call of ~µs).
    for (const char* shift : {"-3600000000", "2000"}) {
        const std::string log = temp_dir() + "/stamps";
        ScopedEnv env({{"FAKE_NVML_GPUS", "1"}, {"FAKE_NVML_STAMP_SHIFT_US", shift},
                       {"FAKE_NVML_STAMP_SHIFT_EVERY", "2"}, {"FAKE_NVML_STAMP_LOG", log}});
        auto s = open_fake_nvml();
        REQUIRE(s->channels().size() == 2);
        int shifted = 0, wrong = 0;
        for (int k = 0; k < 6; ++k) {
            const auto r = poll(*s);
            const StampRecord last = read_stamps(log).back();
            for (int c = 0; c < 2; ++c) {
                if (last.shifted) {
                    if (r[c].t_ns != 0) ++wrong;  // 0: the sampler dates it at the poll
                } else if (std::llabs(r[c].t_ns - last.mono_ns) > 3000) {
                    ++wrong;
                }
            }
            shifted += last.shifted ? 1 : 0;
        }
        CHECK(wrong == 0);
        CHECK(shifted == 3);
        const auto info = s->info();
        CHECK(info.at("timestamps_rejected") == std::to_string(2 * shifted));
        CHECK(info.at("timestamps_used") == std::to_string(2 * (6 - shifted)));
    }
    // the dedicated calls carry no timestamp: the poll dates them
    ScopedEnv env({{"FAKE_NVML_NO_FIELDS", "1"}});
    auto s = open_fake_nvml();
    const auto r = poll(*s);
    CHECK(r[0].t_ns == 0 && r[1].t_ns == 0);
    CHECK(contains(s->info().at("reading_time"), "the poll's time"));
}

TEST(nvml_grace_hopper_module_power_contains_its_gpu) {
    // GPUs 0 and 2 sit on Grace Hopper modules; the fake's module i draws (i+1) x (100 W GPU + 50 W CPU)
    ScopedEnv env({{"FAKE_NVML_GPUS", "3"}, {"FAKE_NVML_MODULE_GPUS", "0,2"}, {"FAKE_NVML_BASE_W", "100"},
                   {"FAKE_NVML_MODULE_CPU_W", "50"}});
    auto s = open_fake_nvml();
    const auto& ch = s->channels();
    CHECK(gpu_domains(*s) == (Domains{"gpu0", "module0", "gpu1", "gpu2", "module2"}));
    REQUIRE(ch.size() == 8);
    std::map<std::string, std::string> parent;
    for (const auto& c : ch) parent[c.domain] = c.parent_domain;
    CHECK(parent == (std::map<std::string, std::string>{
                        {"gpu0", "module0"}, {"module0", ""}, {"gpu1", ""}, {"gpu2", "module2"}, {"module2", ""}}));
    for (const auto& c : ch) {
        if (c.domain.rfind("module", 0) != 0) continue;
        CHECK(c.quantity == Quantity::Power);  // no module energy counter
        CHECK(c.device_uuid == fake_uuid(static_cast<unsigned>(std::stoul(c.domain.substr(6)))));
        // Hopper: the CPU sampled ~10 ms and the GPU ~20 ms of each 100 ms
        CHECK(c.averaging_window_ns == 20000000 && c.averaging_window_min_ns == 8000000 &&
              c.averaging_window_max_ns == 27000000);
        CHECK(c.max_power_w == 3000.0);
    }
    const auto r = poll(*s);
    CHECK_NEAR(r[1].energy_j_or_power_w, 100.0, 1e-9);  // gpu0's own power
    CHECK_NEAR(r[2].energy_j_or_power_w, 150.0, 1e-9);  // module0: GPU + CPU
    CHECK_NEAR(r[6].energy_j_or_power_w, 300.0, 1e-9);
    CHECK_NEAR(r[7].energy_j_or_power_w, 450.0, 1e-9);  // module2: 3 x (100 + 50)
    CHECK(r[2].t_ns != 0 && r[2].t_ns == r[1].t_ns);  // read in the same call
    const auto info = s->info();
    CHECK(info.at("gpu0_module_power") ==
          "module0: field 186 at module scope (GPU + CPU + memory), averaging ~10-20 ms (Grace Hopper: CPU ~10 ms, "
          "GPU ~20 ms of each 100 ms)");
    CHECK(contains(info.at("gpu1_module_power"), "none:") && contains(info.at("gpu1_module_power"), "Not Supported"));
    {
        // another architecture: the module's window is not known, and said so
        ScopedEnv arch({{"FAKE_NVML_ARCH", "10"}});
        auto b = open_fake_nvml();
        CHECK(b->channels()[2].domain == "module0" && b->channels()[2].averaging_window_min_ns == 5000000 &&
              b->channels()[2].averaging_window_max_ns == 1050000000);
    }
    {
        // without field values there is no module scope: nothing is added, and info says why
        ScopedEnv nofields({{"FAKE_NVML_NO_FIELDS", "1"}});
        auto b = open_fake_nvml();
        CHECK(gpu_domains(*b) == (Domains{"gpu0", "gpu1", "gpu2"}));
        for (const auto& c : b->channels()) CHECK(c.parent_domain.empty());
        CHECK(contains(b->info().at("gpu0_module_power"), "needs nvmlDeviceGetFieldValues"));
    }
    // a lost GPU takes its module channel with it
    ScopedEnv lose({{"FAKE_NVML_LOSE_GPU", "0"}, {"FAKE_NVML_LOSE_AFTER_MS", "30"}});
    auto l = open_fake_nvml();
    ::usleep(40000);
    const auto rl = poll(*l);
    CHECK(rl[0].status == PollStatus::Gone && rl[2].status == PollStatus::Gone && rl[3].status == PollStatus::Ok);
}

TEST(nvml_missing_library_says_how_to_fix) {
    try {
        open_sensor("nvml", Options({{"nvml_library", "/nonexistent/libnvidia-ml.so.1"}}));
        CHECK(false);
    } catch (const SensorError& e) {
        CHECK(e.category() == ErrorCategory::LibraryMissing);
        CHECK(std::string(e.what()).find("/nonexistent/libnvidia-ml.so.1") != std::string::npos);
        CHECK(e.fix().find("GREENPROBE_NVML_LIBRARY") != std::string::npos);
    }
}

TEST(nvml_init_failure_is_classified) {
    ::setenv("FAKE_NVML_INIT_RC", "9", 1);
    CHECK(category_of([] { open_sensor("nvml", Options({{"nvml_library", FAKE_NVML_PATH}})); }) ==
          ErrorCategory::LibraryMissing);
    ::unsetenv("FAKE_NVML_INIT_RC");
}

TEST(gpu_usage_reads_utilisation_and_memory_per_device) {
    ::setenv("FAKE_NVML_GPUS", "2", 1);
    ::setenv("FAKE_NVML_UTIL", "37", 1);
    ::setenv("FAKE_NVML_MEM_USED_MB", "100", 1);
    {
        NvmlUsage u(FAKE_NVML_PATH);
        CHECK(u.names().size() == 2 && u.names()[1] == "Fake GPU 1");
        const auto r = u.read();
        CHECK(r.size() == 2);
        CHECK(r[0].gpu_util_pct == 37 && r[1].gpu_util_pct == 37);
        CHECK(r[1].memory_used_bytes == 2 * 100 * 1024 * 1024);  // GPU i uses (i+1) x USED
        CHECK(r[0].memory_total_bytes > r[0].memory_used_bytes && r[0].error.empty());
    }
    ::setenv("FAKE_NVML_NO_USAGE", "1", 1);
    {
        NvmlUsage u(FAKE_NVML_PATH);
        const auto r = u.read();
        CHECK(r[0].gpu_util_pct == -1 && r[0].memory_used_bytes == -1);
        CHECK(r[0].error.find("nvmlDeviceGetUtilizationRates") != std::string::npos);
    }
    ::unsetenv("FAKE_NVML_NO_USAGE");
    ::unsetenv("FAKE_NVML_GPUS");
    ::unsetenv("FAKE_NVML_UTIL");
    ::unsetenv("FAKE_NVML_MEM_USED_MB");
    try {
        NvmlUsage u("/nonexistent/libnvidia-ml.so.1");
        CHECK(false);
    } catch (const SensorError& e) {
        CHECK(e.category() == ErrorCategory::LibraryMissing);
    }
}

TEST(gpu_usage_reads_only_the_gpus_the_nvml_sensor_measures) {
    {
        GpuEnv env({{"CUDA_VISIBLE_DEVICES", fake_uuid(2)}, {"FAKE_NVML_MEM_USED_MB", "100"}});
        NvmlUsage u(FAKE_NVML_PATH);
        const auto r = u.read();
        REQUIRE(r.size() == 1);
        CHECK(r[0].index == 2 && r[0].uuid == fake_uuid(2));
        CHECK(r[0].memory_used_bytes == 3LL * 100 * 1024 * 1024);  // GPU i uses (i+1) x USED: the right one was read
        CHECK(u.names() == std::vector<std::string>{"Fake GPU 2"});
        CHECK(contains(u.selection(), "CUDA_VISIBLE_DEVICES='" + fake_uuid(2) + "'"));
        // the sensor's gpus= option wins over the environment, as it does for the sensor
        NvmlUsage both(FAKE_NVML_PATH, std::string("1,3"));
        const auto r2 = both.read();
        REQUIRE(r2.size() == 2);
        CHECK(r2[0].index == 1 && r2[1].index == 3 && r2[1].uuid == fake_uuid(3));
        CHECK(category_of([] { NvmlUsage bad(FAKE_NVML_PATH, std::string("7")); }) == ErrorCategory::NotFound);
        ::unsetenv("FAKE_NVML_MEM_USED_MB");
    }
    GpuEnv env({});
    NvmlUsage every(FAKE_NVML_PATH);  // nothing set: every GPU NVML sees
    CHECK(every.read().size() == 4 && every.selection() == "every GPU NVML sees");
}

namespace {
// The fake NVML's virtual clock (tests/fixtures/fixture_env.h): the library NvmlUsage loads, by the same
// path, is the one dlopen gives here.
class FakeNvmlClock {
  public:
    FakeNvmlClock() : handle_(dlopen(FAKE_NVML_PATH, RTLD_NOW | RTLD_LOCAL)) {
        REQUIRE(handle_ != nullptr);
        set_ = reinterpret_cast<void (*)(long long)>(dlsym(handle_, "fake_set_now"));
        live_ = reinterpret_cast<long (*)()>(dlsym(handle_, "fakeNvmlGpmSamplesLive"));
        info_calls_ = reinterpret_cast<long (*)()>(dlsym(handle_, "fakeNvmlProcessInfoCalls"));
        REQUIRE(set_ && live_ && info_calls_);
    }
    ~FakeNvmlClock() {
        set_(0);
        dlclose(handle_);
    }
    FakeNvmlClock(const FakeNvmlClock&) = delete;
    FakeNvmlClock& operator=(const FakeNvmlClock&) = delete;
    void set(long long t_ns) const { set_(t_ns); }
    long gpm_samples_live() const { return live_(); }
    long process_info_calls() const { return info_calls_(); }  // of nvmlDeviceGetProcessesUtilizationInfo

  private:
    void* handle_;
    void (*set_)(long long) = nullptr;
    long (*live_)() = nullptr;
    long (*info_calls_)() = nullptr;
};

// (GPU instance, pid) -> busy ns, of the MIG samples (the others left out).
std::map<std::pair<int, uint32_t>, int64_t> by_instance(const std::vector<GpuProcessSample>& samples) {
    std::map<std::pair<int, uint32_t>, int64_t> out;
    for (const auto& x : samples) {
        if (x.gpu_instance >= 0) out[{x.gpu_instance, x.pid}] = x.gfx_busy_ns;
    }
    return out;
}
}  // namespace

TEST(gpu_usage_on_a_mig_gpu_gives_each_instance_its_busy_time_from_gpm) {
    // GPU 0 split into GPU instances 1 and 5: 4101 alone in 1; 4102 and 4103 share 5, their busy
    // spans overlapping by 0.1 s (the instance was busy 0.8 s of them, not 0.9)
    const long long t0 = 1'000'000'000'000LL, ms = 1'000'000LL;
    const std::string dir = temp_dir();
    std::ofstream(dir + "/procs.txt") << "0 4101 50 " << t0 + 200 * ms << " " << t0 + 700 * ms << " 1\n"
                                      << "0 4101 50 " << t0 + 1000 * ms << " " << t0 + 1300 * ms << " 1\n"
                                      << "0 4102 120 " << t0 + 100 * ms << " " << t0 + 500 * ms << " 5\n"
                                      << "0 4103 120 " << t0 + 400 * ms << " " << t0 + 900 * ms << " 5\n"
                                      << "1 4104 200 " << t0 << " " << t0 + 2000 * ms << "\n";
    GpuEnv env({{"FAKE_NVML_MIG", "0"}, {"FAKE_NVML_PROCS", dir + "/procs.txt"},
                {"FAKE_NVML_T0_NS", std::to_string(t0)}, {"FAKE_NVML_GPM_REFRESH_MS", "0"}}, "2");
    const FakeNvmlClock clock;
    const long live_before = clock.gpm_samples_live();
    {
        NvmlUsage u(FAKE_NVML_PATH);
        CHECK(u.process_support().empty());
        clock.set(t0 + 50 * ms);
        // the first GPM samples: bases only; neither instance lists a process yet (pid 0)
        const auto first = by_instance(u.processes(0, t0 + 50 * ms));
        CHECK(first.size() == 2 && first.at({1, 0}) == 0 && first.at({5, 0}) == 0);
        CHECK(u.process_errors().empty());
        clock.set(t0 + 120 * ms);  // 70 ms later: too soon for another GPM sample, the count stands
        const auto soon = by_instance(u.processes(0, t0 + 120 * ms));
        CHECK(soon.size() == 2 && soon.at({1, 0}) == 0 && soon.at({5, 4102}) == 0);  // 4102 has started
        for (long long t = 300; t <= 1500; t += 300) {
            clock.set(t0 + t * ms);
            const auto got = u.processes(0, t0 + t * ms);
            std::map<int, std::set<uint32_t>> listed;  // GPU instance -> its processes
            std::map<int, int64_t> count;
            for (const auto& x : got) {
                if (x.index == 1) continue;  // GPU 1's shares (no MIG there): below
                CHECK(x.index == 0 && x.t_ns == t0 + t * ms && x.t_us == 0);
                CHECK(!count.count(x.gpu_instance) || count[x.gpu_instance] == x.gfx_busy_ns);  // one count each
                count[x.gpu_instance] = x.gfx_busy_ns;
                listed[x.gpu_instance].insert(x.pid);
            }
            // a process is listed from its first span's start to its last span's end (0: none listed)
            const auto span = [t](long long a, long long b) { return a <= t && t < b; };
            const std::set<uint32_t> in1 = span(200, 1300) ? std::set<uint32_t>{4101} : std::set<uint32_t>{0};
            std::set<uint32_t> in5;
            if (span(100, 500)) in5.insert(4102);
            if (span(400, 900)) in5.insert(4103);
            if (in5.empty()) in5.insert(0);
            CHECK(listed[1] == in1 && listed[5] == in5);
            // each instance's busy time so far (the union of its processes' spans), to within the
            // rounding of GRAPHICS_UTIL x time
            const auto ns = [](long long v) { return static_cast<double>(std::max(0LL, v)) * 1e6; };
            const double want1 = ns(std::min(t, 700LL) - 200) + ns(std::min(t, 1300LL) - 1000);
            const double want5 = ns(std::min(t, 900LL) - 100);
            CHECK(std::abs(static_cast<double>(count[1]) - want1) < 1e3);
            CHECK(std::abs(static_cast<double>(count[5]) - want5) < 1e3);
        }
        // GPU 1 has no MIG: its process's use comes from nvmlDeviceGetProcessUtilization as before
        clock.set(t0 + 1600 * ms);
        bool gpu1 = false;
        for (const auto& x : u.processes(0, t0 + 1600 * ms)) gpu1 |= x.index == 1 && x.pid == 4104 && x.gpu_instance < 0;
        CHECK(gpu1 && u.process_errors().empty());
        CHECK(clock.gpm_samples_live() - live_before == 4);  // two per instance, held
        // instance 5 destroyed: its samples are let go, instance 1 counts on
        ::setenv("FAKE_NVML_MIG_INSTANCES", "1", 1);
        clock.set(t0 + 1800 * ms);
        auto one = by_instance(u.processes(0, t0 + 1800 * ms));
        CHECK(one.size() == 1 && one.count({1, 0}) && clock.gpm_samples_live() - live_before == 2);
        // both made again under the same ids (new UUIDs): each count starts again, from this read
        ::setenv("FAKE_NVML_MIG_INSTANCES", "2", 1);
        ::setenv("FAKE_NVML_MIG_GENERATION", "1", 1);
        clock.set(t0 + 2100 * ms);
        for (const auto& x : u.processes(0, t0 + 2100 * ms)) {
            if (x.gpu_instance >= 0) CHECK(x.count_since_ns == t0 + 2100 * ms && x.gfx_busy_ns == 0);
        }
        CHECK(clock.gpm_samples_live() - live_before == 4);
        // the GPU leaves MIG mode: every instance's samples go, and its processes' use is read per
        // process again (nvmlDeviceGetProcessesUtilizationInfo)
        ::setenv("FAKE_NVML_MIG_OFF", "1", 1);
        clock.set(t0 + 2400 * ms);
        for (const auto& x : u.processes(0, t0 + 2400 * ms)) CHECK(x.gpu_instance < 0);
        CHECK(u.process_errors().empty() && clock.gpm_samples_live() == live_before);
        ::unsetenv("FAKE_NVML_MIG_OFF");
        ::unsetenv("FAKE_NVML_MIG_INSTANCES");
        ::unsetenv("FAKE_NVML_MIG_GENERATION");
    }
    CHECK(clock.gpm_samples_live() == live_before);  // all freed with the reader
    // Without GPM (before Hopper): the MIG GPU's use is unknown, and the error says why
    ::setenv("FAKE_NVML_NO_GPM", "1", 1);
    {
        NvmlUsage u(FAKE_NVML_PATH);
        clock.set(t0 + 50 * ms);
        for (const auto& x : u.processes(0, t0 + 50 * ms)) CHECK(x.index != 0);
        const auto errors = u.process_errors();
        REQUIRE(errors.size() == 1);
        CHECK(errors[0].index == 0 && contains(errors[0].error, "MIG mode is on") && contains(errors[0].error, "GPM"));
    }
    ::unsetenv("FAKE_NVML_NO_GPM");
    ::unsetenv("FAKE_NVML_PROCS");
    ::unsetenv("FAKE_NVML_T0_NS");
    ::unsetenv("FAKE_NVML_GPM_REFRESH_MS");
}

TEST(gpu_usage_prefers_the_newer_per_process_call_and_falls_back_to_the_older) {
    // 4101 busy on GPU 0 from 0.1 s to 0.35 s: NVML's 100 ms sample periods ending at 0.2 and 0.3 s
    // hold it whole, the one ending at 0.4 s half
    const long long t0 = 1'000'000'000'000LL, ms = 1'000'000LL;
    const std::string dir = temp_dir();
    std::ofstream(dir + "/procs.txt") << "0 4101 50 " << t0 + 100 * ms << " " << t0 + 350 * ms << "\n";
    GpuEnv env({{"FAKE_NVML_PROCS", dir + "/procs.txt"}, {"FAKE_NVML_T0_NS", std::to_string(t0)}}, "1");
    const FakeNvmlClock clock;
    std::vector<std::vector<unsigned>> seen;  // the shares each call gave, in order
    for (const char* newer : {"0", "1"}) {  // FAKE_NVML_NO_PROCESS_INFO: the newer call answers NOT_SUPPORTED
        ::setenv("FAKE_NVML_NO_PROCESS_INFO", newer, 1);
        clock.set(t0 + 450 * ms);
        NvmlUsage u(FAKE_NVML_PATH);
        const long before = clock.process_info_calls();
        std::vector<unsigned> shares;
        for (const auto& x : u.processes(0, t0 + 450 * ms)) {
            CHECK(x.pid == 4101 && x.gpu_instance < 0 && x.gfx_busy_ns < 0);
            shares.push_back(x.sm_util_pct);
        }
        CHECK(u.process_errors().empty());
        u.processes(0, t0 + 450 * ms);
        // the newer call is tried first (twice a read: the count, then the samples); where it answers
        // NOT_SUPPORTED, once, and the older one from then on
        CHECK(clock.process_info_calls() - before == (std::string(newer) == "0" ? 4 : 1));
        seen.push_back(shares);
    }
    ::unsetenv("FAKE_NVML_NO_PROCESS_INFO");
    ::unsetenv("FAKE_NVML_PROCS");
    ::unsetenv("FAKE_NVML_T0_NS");
    CHECK(seen[0] == (std::vector<unsigned>{100, 100, 50}));
    CHECK(seen[1] == seen[0]);  // both calls give the same samples
}

// --- registry, cpu-estimate -------------------------------------------------------------------

TEST(options_get_int_is_decimal_only) {
    const Options o({{"ten", "010"}, {"hex", "0x10"}, {"neg", "-3"}, {"blank", " 12\n"}, {"junk", "12abc"},
                     {"huge", "99999999999999999999"}, {"empty", ""}});
    CHECK(o.get_int("ten", 0) == 10);  // stoll(.., 0) read octal 8
    CHECK(o.get_int("neg", 0) == -3 && o.get_int("blank", 0) == 12);
    CHECK(o.get_int("empty", 5) == 5 && o.get_int("absent", 6) == 6);
    for (const char* key : {"hex", "junk", "huge"}) {  // stoll(.., 0) took "0x10" as 16
        const SensorError e = error_of([&] { o.get_int(key, 0); });
        CHECK(e.category() == ErrorCategory::Config);
        CHECK(contains(e.what(), std::string("option ") + key + "=") && contains(e.what(), "not a decimal integer"));
        CHECK(contains(e.fix(), std::string("give ") + key + " as a decimal integer"));
    }
}

TEST(cpu_estimate_stat_numbers_that_do_not_read_are_refused) {
    const std::string proc = temp_dir();
    write_file(proc + "/cpuinfo", "processor\t: 0\n");
    write_file(proc + "/stat", "cpu  100 0 100 8x00 0 0 0 0 0 0\n");  // sscanf read 100 0 100 8
    CHECK(category_of([&] { open_sensor("cpu-estimate", Options({{"proc_root", proc}})); }) == ErrorCategory::Io);
    write_file(proc + "/stat", "cpu  100 0 100 -800 0 0 0 0 0 0\n");  // %llu wrapped it
    CHECK(category_of([&] { open_sensor("cpu-estimate", Options({{"proc_root", proc}})); }) == ErrorCategory::Io);
    write_file(proc + "/stat", "cpu  100 0 100 800\n");  // four numbers (the oldest kernels') still do
    CHECK(open_sensor("cpu-estimate", Options({{"proc_root", proc}}))->channels().size() == 1);
}

TEST(unknown_kind_is_a_config_error) {
    CHECK(category_of([] { open_sensor("rapl", Options()); }) == ErrorCategory::Config);
    CHECK(category_of([] { open_gpu_usage("rapl-msr", Options()); }) == ErrorCategory::Config);
}

const SensorKind& row_of(const std::string& name) {
    for (const auto& k : sensor_kinds()) {
        if (name == k.name) return k;
    }
    throw std::runtime_error("no registry row " + name);
}

// Every option a sensor asks for while opening is one its row declares (and so one the Python
// option table, `greenprobe sensors -v` and the command line's help know about).
void check_reads_only_declared(const std::string& kind, const Options& o) {
    std::set<std::string> declared;
    for (const auto& opt : row_of(kind).options) declared.insert(opt.key);
    CHECK(!o.keys_read().empty());
    for (const auto& key : o.keys_read()) {
        if (!declared.count(key)) std::fprintf(stderr, "  %s reads undeclared option %s\n", kind.c_str(), key.c_str());
        CHECK(declared.count(key) == 1);
    }
}

TEST(registry_rows_are_complete_and_consistent) {
    std::set<std::string> names;
    std::map<std::string, std::string> env_of;  // option key -> its variable, across rows
    std::set<std::pair<int, int>> orders;
    for (const auto& k : sensor_kinds()) {
        CHECK(names.insert(k.name).second);
        CHECK(std::strlen(k.description) > 10 && std::strlen(k.domains) > 3);
        CHECK(k.open != nullptr);
        if (k.open_usage) CHECK(k.auto_role == AutoRole::Device);
        if (k.auto_role != AutoRole::None) CHECK(orders.insert({static_cast<int>(k.auto_role), k.auto_order}).second);
        std::set<std::string> keys;
        for (const auto& o : k.options) {
            CHECK(keys.insert(o.key).second);
            CHECK(std::strlen(o.help) > 5);
            const std::string env = o.env;
            CHECK(env.empty() || env.rfind("GREENPROBE_", 0) == 0);
            auto [it, fresh] = env_of.emplace(o.key, env);
            if (!fresh) CHECK(it->second == env);
        }
    }
}

TEST(each_kind_reads_only_the_options_its_row_declares) {
    Options nvml({{"nvml_library", FAKE_NVML_PATH}, {"gpus", "all"}});
    open_sensor("nvml", nvml);
    check_reads_only_declared("nvml", nvml);
    Options usage({{"nvml_library", FAKE_NVML_PATH}, {"gpus", "all"}});
    CHECK(!open_gpu_usage("nvml", usage)->names().empty());
    check_reads_only_declared("nvml", usage);
    for (const char* v : {"ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES"}) ::unsetenv(v);
    Options amd({{"amd_smi_library", FAKE_AMD_SMI_PATH}, {"gpus", "all"}, {"amd_counter_check_ms", "5"}});
    open_sensor("amd-gpu", amd);
    check_reads_only_declared("amd-gpu", amd);
    Options amd_usage({{"amd_smi_library", FAKE_AMD_SMI_PATH}, {"gpus", "all"}});
    CHECK(!open_gpu_usage("amd-gpu", amd_usage)->names().empty());
    check_reads_only_declared("amd-gpu", amd_usage);
    FakeCpu c = make_cpu("GenuineIntel", 1, 2, false);
    write_msr(msr_of(c, 0), 0x606, 0xA0E03);
    write_msr(msr_of(c, 0), 0x611, 0x1000);
    Options msr = cpu_options(c);
    open_sensor("rapl-msr", msr);
    check_reads_only_declared("rapl-msr", msr);
    // rapl-perf's opening succeeds only under the fake perf PMU (test_rapl_perf); here the real kernel
    // refuses the made-up PMU, after every option has been read.
    const std::string perf = temp_dir();
    mkdirs(perf + "/devices/power/events");
    write_file(perf + "/devices/power/type", "4242\n");
    write_file(perf + "/devices/power/cpumask", "0\n");
    write_file(perf + "/devices/power/events/energy-pkg", "event=0x02\n");
    write_file(perf + "/devices/power/events/energy-pkg.scale", "2.3283064365386962890625e-10\n");
    write_file(perf + "/devices/power/events/energy-pkg.unit", "Joules\n");
    Options rapl_perf({{"perf_event_root", perf + "/devices"}, {"sysfs_cpu_root", c.sys}, {"proc_root", c.proc}});
    try {
        open_sensor("rapl-perf", rapl_perf);
    } catch (const SensorError&) {
    }
    check_reads_only_declared("rapl-perf", rapl_perf);
    CHECK(rapl_perf.keys_read().size() == 4);  // the trees, proc and the helper
    Options powercap({{"powercap_root", make_powercap(1000000)}});
    open_sensor("rapl-powercap", powercap);
    check_reads_only_declared("rapl-powercap", powercap);
    const std::string hwmon = temp_dir() + "/hwmon";
    mkdirs(hwmon + "/hwmon0");
    write_file(hwmon + "/hwmon0/name", "amdgpu\n");
    write_file(hwmon + "/hwmon0/power1_average", "1000000\n");
    Options hw({{"hwmon_root", hwmon}, {"skip_chips", "zenpower"}});
    open_sensor("hwmon", hw);
    check_reads_only_declared("hwmon", hw);
    Options synthetic({{"waveform", "square"}, {"domains", "a"}});
    open_sensor("synthetic", synthetic);
    check_reads_only_declared("synthetic", synthetic);
    const std::string proc = temp_dir();
    write_file(proc + "/stat", "cpu  100 0 100 800 0 0 0 0 0 0\n");
    write_file(proc + "/cpuinfo", "processor\t: 0\n");
    Options estimate({{"proc_root", proc}});
    open_sensor("cpu-estimate", estimate);
    check_reads_only_declared("cpu-estimate", estimate);
}

TEST(synthetic_domains_are_top_level_and_replay_keeps_the_recorded_parent) {
    auto syn = open_sensor("synthetic", Options({{"domains", "a,b"}}));
    for (const auto& c : syn->channels()) CHECK(c.parent_domain.empty());
    ReplayTrack pkg, core;
    pkg.info.domain = "package-0";
    core.info.domain = "core";
    core.info.parent_domain = "package-0";
    pkg.offset_ns = core.offset_ns = {0, 1000};
    pkg.energy_j_or_power_w = core.energy_j_or_power_w = {0.0, 1.0};
    std::vector<ReplayTrack> tracks;
    tracks.push_back(pkg);
    tracks.push_back(core);
    auto rep = open_replay(std::move(tracks), "rapl-powercap");
    CHECK(rep->channels()[0].parent_domain.empty());
    CHECK(rep->channels()[1].parent_domain == "package-0");
}

TEST(cpu_estimate_is_flagged_estimated) {
    const std::string proc = temp_dir();
    write_file(proc + "/stat", "cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 1 1 1 1\n");
    write_file(proc + "/cpuinfo", "processor\t: 0\nvendor_id\t: AuthenticAMD\nprocessor\t: 1\n");
    auto s = open_sensor("cpu-estimate", Options({{"proc_root", proc}, {"cpu_tdp_w", "100"}}));
    CHECK(s->channels()[0].estimated);
    CHECK(s->channels()[0].quantity == Quantity::EnergyCounter);
    CHECK(s->channels()[0].parent_domain.empty());
    auto r = poll(*s);
    CHECK_NEAR(r[0].energy_j_or_power_w, 0.0, 1e-12);  // joules since open
    // 100 busy of 200 jiffies over 2 CPUs (1 s at USER_HZ 100): 30 W idle x 1 s + 70 W x 0.5 = 65 J
    write_file(proc + "/stat", "cpu  150 0 150 900 0 0 0 0 0 0\n");
    r = poll(*s);
    CHECK_NEAR(r[0].energy_j_or_power_w, (30.0 * 200 + 70.0 * 100) / (2.0 * static_cast<double>(sysconf(_SC_CLK_TCK))), 1e-9);
    write_file(proc + "/stat", "cpu  150 0 150 1100 0 0 0 0 0 0\n");  // then 200 idle jiffies: 30 W x 1 s
    r = poll(*s);
    const double hz2 = 2.0 * static_cast<double>(sysconf(_SC_CLK_TCK));
    CHECK_NEAR(r[0].energy_j_or_power_w, (30.0 * 400 + 70.0 * 100) / hz2, 1e-9);
    // 10 iowait and 100 stolen jiffies: time passes, nothing of this machine's runs (idle power)
    write_file(proc + "/stat", "cpu  150 0 150 1100 10 0 0 100 0 0\n");
    r = poll(*s);
    CHECK_NEAR(r[0].energy_j_or_power_w, (30.0 * 510 + 70.0 * 100) / hz2, 1e-9);
    // iowait going back (the kernel lets it): the counter never does
    write_file(proc + "/stat", "cpu  150 0 150 1100 4 0 0 100 0 0\n");
    r = poll(*s);
    CHECK_NEAR(r[0].energy_j_or_power_w, (30.0 * 510 + 70.0 * 100) / hz2, 1e-9);
}

TEST_MAIN()
