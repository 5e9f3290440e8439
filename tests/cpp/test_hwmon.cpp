// The hwmon sensor against stand-in trees built here: chips as the kernel lays them out (a name file,
// *_input/_average/_label files, a device link), one per driver the sensor knows, plus the pure
// helpers of hwmon_parse.hpp. A chip that vanishes is a real sysfs-like (kernfs) file removed under
// an open descriptor, where this machine lets the test make one (a cgroup v2 directory).
#include <fcntl.h>
#include <grp.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <stdexcept>
#include <string>

#include "check.hpp"
#include "fixtures.hpp"
#include "greenprobe/counter.hpp"
#include "greenprobe/registry.hpp"
#include "hwmon_parse.hpp"

using namespace greenprobe;

namespace {

std::string temp_dir() { return fixtures::temp_dir("greenprobe-hwmon"); }

void write_file(const std::string& path, const std::string& text) {
    std::ofstream f(path, std::ios::trunc);
    f << text;
    if (!f) throw std::runtime_error("cannot write " + path);
}

// One chip: root/<dir>/ with a name file, the given attribute files (name -> contents, "\n" added),
// and a device link to `device` where it is not empty (a dangling link, as readlink needs no target).
std::string make_chip(const std::string& root, const std::string& dir, const std::string& name,
                      const std::map<std::string, std::string>& files, const std::string& device = "") {
    const std::string d = root + "/" + dir;
    ::mkdir(root.c_str(), 0755);
    ::mkdir(d.c_str(), 0755);
    if (!name.empty()) write_file(d + "/name", name + "\n");
    for (const auto& [f, v] : files) write_file(d + "/" + f, v + "\n");
    if (!device.empty() && ::symlink(device.c_str(), (d + "/device").c_str()) != 0) throw std::runtime_error("symlink");
    return d;
}

std::unique_ptr<Sensor> open_hwmon_at(const std::string& root, std::map<std::string, std::string> extra = {}) {
    extra["hwmon_root"] = root;
    return open_sensor("hwmon", Options(extra));
}

std::vector<Reading> poll(Sensor& s) {
    std::vector<Reading> r(s.channels().size());
    s.poll(r);
    return r;
}

const ChannelInfo* find(const Sensor& s, const std::string& domain) {
    for (const auto& c : s.channels()) {
        if (c.domain == domain) return &c;
    }
    return nullptr;
}

std::size_t index_of(const Sensor& s, const std::string& domain) {
    for (std::size_t i = 0; i < s.channels().size(); ++i) {
        if (s.channels()[i].domain == domain) return i;
    }
    throw std::runtime_error("no domain " + domain);
}

SensorError error_of(const std::function<void()>& fn) {
    try {
        fn();
    } catch (const SensorError& e) {
        return e;
    }
    throw std::runtime_error("no SensorError thrown");
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

const char* kPci0 = "../../../pci0000:00/0000:03:00.0";
const char* kPci1 = "../../../pci0000:00/0000:83:00.0";

}  // namespace

// --- the pure helpers -------------------------------------------------------------------------

TEST(attribute_names_parse_as_the_abi_writes_them) {
    hwmon::AttrName a;
    REQUIRE(hwmon::parse_attr("power1_average_interval", a));
    CHECK(a.type == "power" && a.index == 1 && a.item == "average_interval");
    REQUIRE(hwmon::parse_attr("energy12_input", a));
    CHECK(a.type == "energy" && a.index == 12 && a.item == "input");
    CHECK(!hwmon::parse_attr("name", a));
    CHECK(!hwmon::parse_attr("update_interval", a));
    CHECK(!hwmon::parse_attr("power_input", a));
    CHECK(!hwmon::parse_attr("power1_", a));
    CHECK(hwmon::hwmon_index("hwmon12") == 12);
    CHECK(hwmon::hwmon_index("hwmon") == -1 && hwmon::hwmon_index("hwmon1x") == -1 && hwmon::hwmon_index("x") == -1);
    // numbers by the one parser: decimal, within an int
    CHECK(hwmon::hwmon_index("hwmon0010") == 10 && hwmon::hwmon_index("hwmon99999999") == -1);
    REQUIRE(hwmon::parse_attr("in007_input", a));
    CHECK(a.type == "in" && a.index == 7 && a.item == "input");
    CHECK(!hwmon::parse_attr("power1234567_input", a));
}

TEST(names_are_sanitised_and_pci_addresses_recognised) {
    CHECK(hwmon::sanitise("PPT") == "ppt");
    CHECK(hwmon::sanitise("VDD_CPU GPU CV") == "vdd_cpu-gpu-cv");
    CHECK(hwmon::sanitise("  Module Power Socket 0 ") == "module-power-socket-0");
    CHECK(hwmon::is_pci_address("0000:03:00.0"));
    CHECK(hwmon::is_pci_address("00000000:3b:00.1"));
    CHECK(!hwmon::is_pci_address("ACPI000D:00"));
    CHECK(!hwmon::is_pci_address("1-0040"));
    CHECK(!hwmon::is_pci_address("0000:03:00.8"));
    CHECK(!hwmon::is_pci_address("amd_energy.0"));
}

TEST(a_failed_read_is_gone_only_when_the_chip_vanished) {
    CHECK(hwmon::status_of_read_errno(ENODEV) == PollStatus::Gone);  // kernfs: the device was removed
    CHECK(hwmon::status_of_read_errno(ENOENT) == PollStatus::Gone);
    CHECK(hwmon::status_of_read_errno(EAGAIN) == PollStatus::Retry);
    CHECK(hwmon::status_of_read_errno(EIO) == PollStatus::Retry);
    CHECK(hwmon::status_of_read_errno(EPERM) == PollStatus::Retry);  // amdgpu asleep or in reset
    CHECK(hwmon::status_of_read_errno(ENODATA) == PollStatus::Retry);
}

// --- one chip per driver ------------------------------------------------------------------------

TEST(i915_energy_counter_in_microjoules_with_its_bus_id) {
    const std::string root = temp_dir() + "/hwmon";
    const std::string d = make_chip(root, "hwmon4", "i915",
                                    {{"energy1_input", "1000000"}, {"power1_max", "not a reading"},
                                     {"power1_max_interval", "28"}, {"power1_crit", "x"}, {"curr1_crit", "x"},
                                     {"in0_input", "1100"}},
                                    kPci0);
    auto s = open_hwmon_at(root);
    REQUIRE(s->channels().size() == 1);
    const ChannelInfo& c = s->channels()[0];
    CHECK(c.domain == "i915");
    CHECK(c.quantity == Quantity::EnergyCounter);
    CHECK(c.device_bus_id == "0000:03:00.0");
    CHECK(c.wrap_j == 0.0 && c.max_power_w == 1000.0 && c.resolution_j == 1e-6 && c.resolution_w == 0.0 && !c.estimated);
    CHECK(c.parent_domain.empty());
    CHECK(poll(*s)[0].energy_j_or_power_w == 0.0);  // energy since the first read (at open)
    write_file(d + "/energy1_input", "1500000\n");
    CHECK_NEAR(poll(*s)[0].energy_j_or_power_w, 0.5, 1e-15);
    write_file(d + "/energy1_input", "0001500001\n");  // leading zeros are decimal
    CHECK_NEAR(poll(*s)[0].energy_j_or_power_w, 0.500001, 1e-15);
    const auto info = s->info();
    CHECK(info.at("file_i915") == d + "/energy1_input");
    CHECK(contains(info.at("chips"), "i915 (hwmon4) at 0000:03:00.0"));
}

TEST(amdgpu_power_average_states_its_window_and_ignores_the_cap) {
    const std::string root = temp_dir() + "/hwmon";
    const std::string d =
        make_chip(root, "hwmon2", "amdgpu",
                  {{"power1_average", "123456789"}, {"power1_average_interval", "250"}, {"power1_label", "PPT"},
                   {"power1_cap", "300000000"}, {"power1_cap_max", "350000000"}, {"temp1_input", "45000"}},
                  kPci0);
    auto s = open_hwmon_at(root);
    REQUIRE(s->channels().size() == 1);
    const ChannelInfo& c = s->channels()[0];
    CHECK(c.domain == "amdgpu-ppt");
    CHECK(c.quantity == Quantity::Power);
    CHECK(c.averaging_window_ns == 250000000);  // stated by the chip: exact, no range
    CHECK(c.averaging_window_min_ns == 0 && c.averaging_window_max_ns == 0);
    CHECK(c.max_power_w == 2000.0 && c.device_bus_id == "0000:03:00.0");
    auto r = poll(*s);
    CHECK(r[0].status == PollStatus::Ok);
    CHECK_NEAR(r[0].energy_j_or_power_w, 123.456789, 1e-12);
    write_file(d + "/power1_average", "1\n");
    CHECK_NEAR(poll(*s)[0].energy_j_or_power_w, 1e-6, 1e-18);
}

TEST(amdgpu_apu_keeps_slow_ppt_and_power_input_states_an_unknown_window_range) {
    const std::string root = temp_dir() + "/hwmon";
    make_chip(root, "hwmon0", "amdgpu",
              {{"power1_input", "15000000"}, {"power1_label", "slowPPT"}, {"power2_input", "17000000"},
               {"power2_label", "fastPPT"}});
    auto s = open_hwmon_at(root);
    REQUIRE(s->channels().size() == 1);
    const ChannelInfo& c = s->channels()[0];
    CHECK(c.domain == "amdgpu-slowppt");
    // power*_input: the window is not in the files: a range, not 0 (which would claim "exact")
    CHECK(c.averaging_window_min_ns == 100000 && c.averaging_window_max_ns == 1000000000);
    CHECK(c.averaging_window_ns > 0);
    CHECK(c.device_bus_id.empty());
    CHECK_NEAR(poll(*s)[0].energy_j_or_power_w, 15.0, 1e-12);
    CHECK(contains(s->info().at("skipped"), "fastPPT left out"));
}

TEST(ina3221_power_inputs_with_labels_nest_in_vdd_in) {
    const std::string root = temp_dir() + "/hwmon";
    const std::string d = make_chip(root, "hwmon1", "ina3221",
                                    {{"power1_input", "5120000"}, {"power1_label", "VDD_IN"},
                                     {"power2_input", "1480000"}, {"power2_label", "VDD_CPU_GPU_CV"},
                                     {"power3_input", "1630000"}, {"power3_label", "VDD_SOC"},
                                     {"update_interval", "2000"}},
                                    "../../../1-0040");
    auto s = open_hwmon_at(root);
    REQUIRE(s->channels().size() == 3);
    const ChannelInfo* in = find(*s, "ina3221-vdd_in");
    const ChannelInfo* cpu = find(*s, "ina3221-vdd_cpu_gpu_cv");
    const ChannelInfo* soc = find(*s, "ina3221-vdd_soc");
    REQUIRE(in && cpu && soc);
    CHECK(in->parent_domain.empty());
    CHECK(cpu->parent_domain == "ina3221-vdd_in" && soc->parent_domain == "ina3221-vdd_in");
    CHECK(in->device_bus_id.empty());  // an I2C device, not PCI
    CHECK(in->nominal_update_period_ns == 2000000000);
    CHECK(in->averaging_window_max_ns == 2000000000);  // the chip refreshes every 2 s: a window up to that
    auto r = poll(*s);
    CHECK_NEAR(r[index_of(*s, "ina3221-vdd_in")].energy_j_or_power_w, 5.12, 1e-12);
    CHECK_NEAR(r[index_of(*s, "ina3221-vdd_soc")].energy_j_or_power_w, 1.63, 1e-12);
    write_file(d + "/power2_input", "0\n");
    CHECK(poll(*s)[index_of(*s, "ina3221-vdd_cpu_gpu_cv")].energy_j_or_power_w == 0.0);
}

TEST(ina3221_mainline_power_is_bus_voltage_times_current) {
    const std::string root = temp_dir() + "/hwmon";
    const std::string d = make_chip(root, "hwmon1", "ina3221",
                                    {{"in1_input", "5000"}, {"curr1_input", "1200"}, {"in1_label", "VDD_IN"},
                                     {"in2_input", "4992"}, {"curr2_input", "-5"}, {"in2_label", "VDD_SOC"},
                                     {"in4_input", "12"},  // a shunt voltage: no current pairs with it
                                     {"curr1_crit", "10000"}, {"curr1_max", "8000"}});
    auto s = open_hwmon_at(root);
    REQUIRE(s->channels().size() == 2);
    const auto r = poll(*s);
    CHECK_NEAR(r[index_of(*s, "ina3221-vdd_in")].energy_j_or_power_w, 6.0, 1e-12);  // 5000 mV x 1200 mA
    CHECK_NEAR(r[index_of(*s, "ina3221-vdd_soc")].energy_j_or_power_w, -0.02496, 1e-12);  // signed current kept
    CHECK(find(*s, "ina3221-vdd_soc")->parent_domain == "ina3221-vdd_in");
    CHECK(contains(s->info().at("file_ina3221-vdd_in"), d + "/in1_input x " + d + "/curr1_input"));
    write_file(d + "/curr1_input", "2000\n");
    CHECK_NEAR(poll(*s)[index_of(*s, "ina3221-vdd_in")].energy_j_or_power_w, 10.0, 1e-12);
}

TEST(two_power_meters_without_pci_address_take_their_hwmon_index) {
    const std::string root = temp_dir() + "/hwmon";
    for (int i : {1, 2}) {
        make_chip(root, "hwmon" + std::to_string(i), "power_meter",
                  {{"power1_average", std::to_string(100000000 * i)}, {"power1_average_interval", "1000"},
                   {"power1_cap", "0"}},
                  "../../../ACPI000D:0" + std::to_string(i - 1));
    }
    auto s = open_hwmon_at(root);
    REQUIRE(s->channels().size() == 2);
    CHECK(s->channels()[0].domain == "power_meter-hwmon1");
    CHECK(s->channels()[1].domain == "power_meter-hwmon2");
    CHECK(s->channels()[0].averaging_window_ns == 1000000000);
    CHECK(s->channels()[0].max_power_w == 5000.0);
    const auto r = poll(*s);
    CHECK_NEAR(r[0].energy_j_or_power_w, 100.0, 1e-12);
    CHECK_NEAR(r[1].energy_j_or_power_w, 200.0, 1e-12);
}

TEST(two_amdgpus_are_told_apart_by_pci_address_and_the_order_is_numeric) {
    const std::string root = temp_dir() + "/hwmon";
    make_chip(root, "hwmon10", "amdgpu", {{"power1_average", "2000000"}, {"power1_label", "PPT"}}, kPci1);
    make_chip(root, "hwmon2", "amdgpu", {{"power1_average", "1000000"}, {"power1_label", "PPT"}}, kPci0);
    make_chip(root, "hwmon3", "nvme", {{"temp1_input", "35000"}});
    auto s = open_hwmon_at(root);
    REQUIRE(s->channels().size() == 2);
    CHECK(s->channels()[0].domain == "amdgpu-0000:03:00.0-ppt");  // hwmon2 before hwmon10
    CHECK(s->channels()[1].domain == "amdgpu-0000:83:00.0-ppt");
    CHECK(s->channels()[0].device_bus_id == "0000:03:00.0");
    CHECK(s->channels()[1].device_bus_id == "0000:83:00.0");
    const auto r = poll(*s);
    CHECK_NEAR(r[0].energy_j_or_power_w, 1.0, 1e-12);
    CHECK_NEAR(r[1].energy_j_or_power_w, 2.0, 1e-12);
    const auto info = s->info();
    CHECK(contains(info.at("skipped"), "nvme (hwmon3): no energy or power readings"));
    CHECK(contains(info.at("chips_seen"), "nvme (hwmon3)"));
}

TEST(a_chip_with_energy_counters_is_read_through_them_not_its_power) {
    const std::string root = temp_dir() + "/hwmon";
    make_chip(root, "hwmon0", "xe",
              {{"energy1_input", "5000000"}, {"energy1_label", "card"}, {"energy2_input", "3000000"},
               {"energy2_label", "pkg"}, {"power1_input", "200000000"}, {"power1_label", "card"}},
              kPci0);
    auto s = open_hwmon_at(root);
    REQUIRE(s->channels().size() == 2);
    for (const auto& c : s->channels()) CHECK(c.quantity == Quantity::EnergyCounter);
    REQUIRE(find(*s, "xe-card") && find(*s, "xe-pkg"));
    CHECK(find(*s, "xe-pkg")->parent_domain == "xe-card");
    CHECK(find(*s, "xe-card")->parent_domain.empty());
    CHECK(contains(s->info().at("skipped"), "power1 left out: the chip's energy counters measure the same"));
}

TEST(amd_energy_cores_nest_in_their_socket_and_several_sockets_keep_only_sockets) {
    const std::string root = temp_dir() + "/hwmon";
    make_chip(root, "hwmon0", "amd_energy",
              {{"energy1_input", "10"}, {"energy1_label", "Ecore000"}, {"energy2_input", "20"},
               {"energy2_label", "Ecore001"}, {"energy3_input", "100"}, {"energy3_label", "Esocket0"}});
    auto s = open_hwmon_at(root);
    REQUIRE(s->channels().size() == 3);
    CHECK(find(*s, "amd_energy-ecore000")->parent_domain == "amd_energy-esocket0");
    CHECK(find(*s, "amd_energy-esocket0")->parent_domain.empty());
    const std::string root2 = temp_dir() + "/hwmon";
    make_chip(root2, "hwmon0", "amd_energy",
              {{"energy1_input", "10"}, {"energy1_label", "Ecore000"}, {"energy2_input", "100"},
               {"energy2_label", "Esocket0"}, {"energy3_input", "100"}, {"energy3_label", "Esocket1"}});
    auto two = open_hwmon_at(root2);
    REQUIRE(two->channels().size() == 2);
    CHECK(find(*two, "amd_energy-esocket0") && find(*two, "amd_energy-esocket1"));
    CHECK(contains(two->info().at("skipped"), "Ecore counters left out"));
}

TEST(unlabelled_channels_of_one_chip_are_named_by_attribute_and_old_drivers_use_device) {
    const std::string root = temp_dir() + "/hwmon";
    make_chip(root, "hwmon0", "somechip", {{"power1_input", "1000000"}, {"power2_input", "2000000"}});
    // an older driver: name and attributes in hwmon1/device/
    const std::string dev = root + "/hwmon1/device";
    ::mkdir((root + "/hwmon1").c_str(), 0755);
    ::mkdir(dev.c_str(), 0755);
    write_file(dev + "/name", "oldchip\n");
    write_file(dev + "/power1_average", "7000000\n");
    auto s = open_hwmon_at(root);
    REQUIRE(s->channels().size() == 3);
    CHECK(s->channels()[0].domain == "somechip-power1");
    CHECK(s->channels()[1].domain == "somechip-power2");
    CHECK(s->channels()[2].domain == "oldchip");
    CHECK(s->channels()[0].max_power_w == 0.0);  // an unknown chip: no ceiling claimed
    CHECK_NEAR(poll(*s)[2].energy_j_or_power_w, 7.0, 1e-12);
    CHECK(s->info().at("file_oldchip") == dev + "/power1_average");
}

// --- NVIDIA Grace's ACPI power meters: named and nested by power1_oem_info ---------------------------

TEST(grace_oem_texts_are_recognised_and_anything_else_is_not) {
    using hwmon::GraceMeter;
    auto is = [](const char* text, GraceMeter kind, int socket) {
        const hwmon::GraceOem g = hwmon::parse_grace_oem(text);
        return g.kind == kind && g.socket == socket;
    };
    CHECK(is("Module Power Socket 0", GraceMeter::Module, 0));
    CHECK(is("Grace Power Socket 1\n", GraceMeter::Grace, 1));
    CHECK(is("CPU Power Socket 3", GraceMeter::Cpu, 3));
    CHECK(is("SysIO  Power Socket 0", GraceMeter::SysIO, 0));  // spacing and case are not significant
    CHECK(is("sysio power socket 12", GraceMeter::SysIO, 12));
    CHECK(is("DRAM Power Socket 0", GraceMeter::None, -1));    // not one of the four
    CHECK(is("CPU Power", GraceMeter::None, -1));              // no socket
    CHECK(is("CPU Power Socket x", GraceMeter::None, -1));
    CHECK(is("Grace Power Socket 0 extra", GraceMeter::None, -1));
    CHECK(is("", GraceMeter::None, -1));
    CHECK(hwmon::grace_domain(GraceMeter::Module, 0) == "grace-module-0");
    CHECK(hwmon::grace_domain(GraceMeter::Grace, 1) == "grace-socket-1");
    CHECK(hwmon::grace_domain(GraceMeter::Cpu, 0) == "grace-cpu-0");
    CHECK(hwmon::grace_domain(GraceMeter::SysIO, 2) == "grace-sysio-2");
    CHECK(hwmon::grace_domain(GraceMeter::None, 0).empty());
}

namespace {
// An ACPI power meter as the kernel lays one out since acpi_power_meter moved to the hwmon info API:
// power1_average in hwmon<N>/, power1_oem_info on the ACPI device that hwmon<N>/device links to.
// `oem` "" leaves the oem file out. in_device: the older layout, everything in the ACPI device's
// directory (the attributes and the oem text); at_top: the oem text in hwmon<N>/ itself.
enum class OemAt { Device, Top };
std::string make_meter(const std::string& root, int n, const std::string& oem, long long micro_w,
                       OemAt at = OemAt::Device, bool in_device = false) {
    const std::string acpi = root + "/../devices/ACPI000D:0" + std::to_string(n);
    ::mkdir(root.c_str(), 0755);
    ::mkdir((root + "/../devices").c_str(), 0755);
    ::mkdir(acpi.c_str(), 0755);
    const std::string d = make_chip(root, "hwmon" + std::to_string(n), in_device ? "" : "power_meter", {}, acpi);
    const std::string attrs = in_device ? d + "/device" : d;
    if (in_device) write_file(attrs + "/name", "power_meter\n");
    write_file(attrs + "/power1_average", std::to_string(micro_w) + "\n");
    write_file(attrs + "/power1_average_interval", "50\n");
    write_file(attrs + "/power1_cap", "0\n");
    if (!oem.empty()) write_file((at == OemAt::Device ? d + "/device" : d) + "/power1_oem_info", oem + "\n");
    return attrs;
}

std::map<std::string, std::string> parents_of(const Sensor& s) {
    std::map<std::string, std::string> m;
    for (const auto& c : s.channels()) m[c.domain] = c.parent_domain;
    return m;
}

std::string show(const std::map<std::string, std::string>& m) {
    std::string out;
    for (const auto& [k, v] : m) out += k + " -> '" + v + "'; ";
    return out;
}

// Fails with the whole map in the message, so that a wrong parent says which.
#define CHECK_PARENTS(sensor, ...)                                                                    \
    do {                                                                                             \
        const std::map<std::string, std::string> want_ = __VA_ARGS__;                                \
        const std::map<std::string, std::string> got_ = parents_of(sensor);                          \
        if (got_ != want_) std::printf("  parents: got %s\n  want %s\n", show(got_).c_str(), show(want_).c_str()); \
        CHECK(got_ == want_);                                                                        \
    } while (0)
}  // namespace

TEST(grace_hopper_meters_are_named_by_oem_info_and_nest_module_grace_cpu_sysio) {
    const std::string root = temp_dir() + "/hwmon";
    // the chips' order says nothing: the CPU rail first, the module last
    make_meter(root, 0, "CPU Power Socket 0", 60000000);
    make_meter(root, 1, "SysIO Power Socket 0", 20000000);
    make_meter(root, 2, "Grace Power Socket 0", 80000000);
    make_meter(root, 3, "Module Power Socket 0", 500000000);
    make_chip(root, "hwmon4", "nvme", {{"temp1_input", "35000"}});
    auto s = open_hwmon_at(root);
    REQUIRE(s->channels().size() == 4);
    CHECK_PARENTS(*s, {{"grace-module-0", ""},
                       {"grace-socket-0", "grace-module-0"},
                       {"grace-cpu-0", "grace-socket-0"},
                       {"grace-sysio-0", "grace-socket-0"}});
    const auto r = poll(*s);
    CHECK_NEAR(r[index_of(*s, "grace-module-0")].energy_j_or_power_w, 500.0, 1e-9);
    CHECK_NEAR(r[index_of(*s, "grace-cpu-0")].energy_j_or_power_w, 60.0, 1e-9);
    const ChannelInfo* m = find(*s, "grace-module-0");
    REQUIRE(m);
    CHECK(m->averaging_window_ns == 50000000 && m->max_power_w == 5000.0 && m->device_bus_id.empty());
    const auto info = s->info();
    CHECK(contains(info.at("oem_info_grace-cpu-0"), "'CPU Power Socket 0'"));
    CHECK(contains(info.at("oem_info_grace-cpu-0"), "inside grace-socket-0"));
    CHECK(contains(info.at("oem_info_grace-module-0"), "top level"));
    CHECK(info.at("file_grace-sysio-0") == root + "/hwmon1/power1_average");
}

TEST(a_missing_grace_meter_leaves_its_rails_in_the_next_one_that_is_read) {
    const std::string root = temp_dir() + "/hwmon";
    make_meter(root, 0, "Module Power Socket 0", 500000000);
    make_meter(root, 1, "Grace Power Socket 0", 80000000);
    make_meter(root, 2, "CPU Power Socket 0", 60000000);
    // the Grace meter left out (skip_chips): the CPU rail is inside the module, not top level
    auto s = open_hwmon_at(root, {{"skip_chips", "hwmon1"}});
    CHECK_PARENTS(*s, {{"grace-module-0", ""}, {"grace-cpu-0", "grace-module-0"}});
    // no module meter (a Grace CPU Superchip, or the module left out): Grace is top level
    auto t = open_hwmon_at(root, {{"skip_chips", "hwmon0"}});
    CHECK_PARENTS(*t, {{"grace-socket-0", ""}, {"grace-cpu-0", "grace-socket-0"}});
    // only the rail: top level, and info says nothing that includes it is read
    auto u = open_hwmon_at(root, {{"chips", "hwmon2"}});
    CHECK_PARENTS(*u, {{"grace-cpu-0", ""}});
    CHECK(contains(u->info().at("oem_info_grace-cpu-0"), "no meter that includes it is read on socket 0"));
}

TEST(two_socket_grace_cpu_superchip_nests_each_rail_in_its_own_socket) {
    const std::string root = temp_dir() + "/hwmon";
    // an older layout: the oem text beside the attributes in hwmon<N>/ for socket 0; socket 1's
    // chips keep everything, name included, in the ACPI device's directory
    int n = 0;  // hwmon<n> reads (n + 1) x 10 W
    for (const char* part : {"Grace", "CPU", "SysIO"}) {
        make_meter(root, n, std::string(part) + " Power Socket 0", 10000000LL * (n + 1), OemAt::Top);
        make_meter(root, n + 1, std::string(part) + " Power Socket 1", 10000000LL * (n + 2), OemAt::Device, true);
        n += 2;
    }
    auto s = open_hwmon_at(root);
    REQUIRE(s->channels().size() == 6);
    CHECK_PARENTS(*s, {{"grace-socket-0", ""},
                       {"grace-socket-1", ""},
                       {"grace-cpu-0", "grace-socket-0"},
                       {"grace-cpu-1", "grace-socket-1"},
                       {"grace-sysio-0", "grace-socket-0"},
                       {"grace-sysio-1", "grace-socket-1"}});
    const auto r = poll(*s);
    CHECK_NEAR(r[index_of(*s, "grace-socket-0")].energy_j_or_power_w, 10.0, 1e-9);  // hwmon0
    CHECK_NEAR(r[index_of(*s, "grace-sysio-1")].energy_j_or_power_w, 60.0, 1e-9);   // hwmon5
    CHECK(s->info().at("file_grace-sysio-1") == root + "/hwmon5/device/power1_average");
}

TEST(a_meter_with_unknown_oem_text_keeps_the_text_as_its_name_at_the_top_level) {
    const std::string root = temp_dir() + "/hwmon";
    make_meter(root, 0, "Module Power Socket 0", 500000000);
    make_meter(root, 1, "DRAM Power Socket 0", 30000000);
    make_meter(root, 2, "Platform Power", 900000000);
    make_meter(root, 3, "Platform Power", 900000000);  // two meters with one text: told apart by directory
    auto s = open_hwmon_at(root);
    CHECK_PARENTS(*s, {{"grace-module-0", ""},
                       {"dram-power-socket-0", ""},
                       {"platform-power-hwmon2", ""},
                       {"platform-power-hwmon3", ""}});
    const auto info = s->info();
    CHECK(contains(info.at("oem_info_dram-power-socket-0"), "'DRAM Power Socket 0': not a meter greenprobe knows"));
    CHECK(contains(info.at("oem_info_dram-power-socket-0"), "top level"));
}

TEST(a_repeated_grace_oem_text_nests_nothing_under_the_meters_that_repeat_it) {
    const std::string root = temp_dir() + "/hwmon";
    make_meter(root, 0, "Module Power Socket 0", 500000000);
    make_meter(root, 1, "Grace Power Socket 0", 80000000);
    make_meter(root, 2, "Grace Power Socket 0", 80000000);
    make_meter(root, 3, "CPU Power Socket 0", 60000000);
    auto s = open_hwmon_at(root);
    // which Grace meter holds the CPU rail is not known: it goes to the module, which holds both
    CHECK_PARENTS(*s, {{"grace-module-0", ""},
                       {"grace-socket-0-hwmon1", ""},
                       {"grace-socket-0-hwmon2", ""},
                       {"grace-cpu-0", "grace-module-0"}});
    CHECK(contains(s->info().at("oem_info_grace-socket-0-hwmon1"), "more than one meter says so"));
}

TEST(power_meters_without_oem_text_keep_their_chip_names_at_the_top_level_and_say_so) {
    const std::string root = temp_dir() + "/hwmon";
    make_meter(root, 1, "", 100000000);
    make_meter(root, 2, "Grace Power Socket 0", 80000000);
    make_meter(root, 3, "", 200000000);
    auto s = open_hwmon_at(root);
    CHECK_PARENTS(*s, {{"power_meter-hwmon1", ""}, {"grace-socket-0", ""}, {"power_meter-hwmon3", ""}});
    const auto info = s->info();
    CHECK(contains(info.at("oem_info_power_meter-hwmon1"), "no power1_oem_info in hwmon1/device/ or hwmon1/"));
    CHECK(contains(info.at("oem_info_power_meter-hwmon1"), "top level"));
    // a chip that is no power meter says nothing about oem text
    const std::string other = temp_dir() + "/hwmon";
    make_chip(other, "hwmon0", "amdgpu", {{"power1_average", "1000000"}, {"power1_label", "PPT"}}, kPci0);
    auto g = open_hwmon_at(other);
    for (const auto& [k, v] : g->info()) CHECK(k.rfind("oem_info_", 0) != 0);
}

// --- choosing chips -------------------------------------------------------------------------------

TEST(skip_chips_and_chips_choose_by_name_or_directory) {
    const std::string root = temp_dir() + "/hwmon";
    make_chip(root, "hwmon0", "amd_energy", {{"energy1_input", "100"}, {"energy1_label", "Esocket0"}});
    make_chip(root, "hwmon1", "amdgpu", {{"power1_average", "1000000"}, {"power1_label", "PPT"}}, kPci0);
    make_chip(root, "hwmon2", "i915", {{"energy1_input", "1"}}, kPci1);
    auto skip = open_hwmon_at(root, {{"skip_chips", "amd_energy, zenpower"}});
    REQUIRE(skip->channels().size() == 2);
    CHECK(skip->channels()[0].domain == "amdgpu-ppt" && skip->channels()[1].domain == "i915");
    CHECK(contains(skip->info().at("skipped"), "amd_energy (hwmon0): in skip_chips"));
    auto only = open_hwmon_at(root, {{"chips", "hwmon2"}});
    REQUIRE(only->channels().size() == 1);
    CHECK(only->channels()[0].domain == "i915");
    CHECK(contains(only->info().at("skipped"), "amdgpu (hwmon1): not in chips"));
    auto both = open_hwmon_at(root, {{"chips", "amdgpu,i915"}, {"skip_chips", "i915"}});
    REQUIRE(both->channels().size() == 1);
    CHECK(both->channels()[0].domain == "amdgpu-ppt");
    const SensorError missing = error_of([&] { open_hwmon_at(root, {{"chips", "xe"}}); });
    CHECK(missing.category() == ErrorCategory::NotFound);
    CHECK(contains(missing.what(), "'xe'") && contains(missing.what(), "amdgpu (hwmon1)"));
    const SensorError none = error_of([&] { open_hwmon_at(root, {{"skip_chips", "amd_energy,amdgpu,i915"}}); });
    CHECK(none.category() == ErrorCategory::NotFound);
    CHECK(contains(none.what(), "chips seen: amd_energy (hwmon0), amdgpu (hwmon1), i915 (hwmon2)"));
    CHECK(contains(none.what(), "in skip_chips"));
}

TEST(no_tree_and_no_readings_are_not_found_with_the_fix) {
    const SensorError root = error_of([] { open_hwmon_at("/nonexistent/hwmon"); });
    CHECK(root.category() == ErrorCategory::NotFound);
    CHECK(contains(root.what(), "/nonexistent/hwmon"));
    CHECK(contains(root.fix(), "GREENPROBE_HWMON_ROOT") && contains(root.fix(), "/sys"));
    const std::string tree = temp_dir() + "/hwmon";
    make_chip(tree, "hwmon0", "coretemp", {{"temp1_input", "45000"}, {"temp1_label", "Package id 0"}});
    make_chip(tree, "hwmon1", "nvme", {{"temp1_input", "35000"}});
    const SensorError none = error_of([&] { open_hwmon_at(tree); });
    CHECK(none.category() == ErrorCategory::NotFound);
    CHECK(contains(none.what(), "coretemp (hwmon0), nvme (hwmon1)"));
    CHECK(contains(none.fix(), "amdgpu"));
}

// --- reading over time ----------------------------------------------------------------------------

TEST(unit_conversions_are_exact_near_the_top_of_64_bits) {
    const std::string root = temp_dir() + "/hwmon";
    const std::string d = make_chip(root, "hwmon0", "i915", {{"energy1_input", "18446744073000000000"}});
    auto s = open_hwmon_at(root);
    write_file(d + "/energy1_input", "18446744073001234567\n");
    CHECK(poll(*s)[0].energy_j_or_power_w == 1.234567);  // differences in µJ, converted once: no precision lost
    write_file(d + "/energy1_input", "18446744073709551615\n");  // 2^64 - 1
    CHECK(poll(*s)[0].energy_j_or_power_w == 709.551615);
}

TEST(a_backward_step_is_reported_backward_for_the_sampler_to_exclude) {
    const std::string root = temp_dir() + "/hwmon";
    const std::string d = make_chip(root, "hwmon0", "i915", {{"energy1_input", "5000000"}});
    auto s = open_hwmon_at(root);
    write_file(d + "/energy1_input", "6000000\n");
    const double before = poll(*s)[0].energy_j_or_power_w;
    CHECK_NEAR(before, 1.0, 1e-15);
    write_file(d + "/energy1_input", "5500000\n");  // the counter shows 0.5 J less: never energy
    const double after = poll(*s)[0].energy_j_or_power_w;
    CHECK_NEAR(after, 0.5, 1e-15);
    const ChannelInfo& c = s->channels()[0];
    // not unwrapped into a huge step (wrap_j 0): the sampler's one check sees it go backwards
    CHECK(judge_step(after - before, 0.001, 0.001, c.max_power_w, c.wrap_j, c.resolution_j) == StepVerdict::Backwards);
    write_file(d + "/energy1_input", "5500100\n");
    CHECK_NEAR(poll(*s)[0].energy_j_or_power_w - after, 100e-6, 1e-15);  // and counts on from there
}

TEST(a_garbled_read_is_retry_not_a_value) {
    const std::string root = temp_dir() + "/hwmon";
    const std::string d = make_chip(root, "hwmon0", "amdgpu", {{"power1_average", "1000000"}});
    auto s = open_hwmon_at(root);
    write_file(d + "/power1_average", "\n");
    auto r = poll(*s);
    CHECK(r[0].status == PollStatus::Retry);
    CHECK(contains(s->last_error(), d + "/power1_average"));
    write_file(d + "/power1_average", "3000000\n");
    r = poll(*s);
    CHECK(r[0].status == PollStatus::Ok);
    CHECK_NEAR(r[0].energy_j_or_power_w, 3.0, 1e-12);
}

namespace {
// A directory of a cgroup v2 hierarchy this process may create: its files are kernfs files, as
// sysfs's are, and removing the directory makes reads of their open descriptors fail with ENODEV,
// as unplugging a device does to its hwmon files. "" where no such hierarchy is writable.
std::string make_kernfs_dir() {
    std::ifstream mounts("/proc/mounts");
    std::string dev, dir, type, rest;
    while (mounts >> dev >> dir >> type && std::getline(mounts, rest)) {
        if (type != "cgroup2") continue;
        const std::string d = dir + "/greenprobe-test-hwmon-" + std::to_string(::getpid());
        if (::mkdir(d.c_str(), 0755) == 0) return d;
    }
    return "";
}
}  // namespace

TEST(a_chip_that_vanishes_mid_run_is_gone_and_the_others_read_on) {
    const std::string kernfs = make_kernfs_dir();
    if (kernfs.empty()) {
        std::printf("  NOT RUN: no writable cgroup v2 hierarchy to stand in for a removable sysfs file "
                    "(the errno mapping is checked in a_failed_read_is_gone_only_when_the_chip_vanished)\n");
        return;
    }
    const std::string root = temp_dir() + "/hwmon";
    // i915's counter is a kernfs file holding "0" (cgroup.freeze): the chip that will vanish
    make_chip(root, "hwmon0", "i915", {}, kPci0);
    REQUIRE(::symlink((kernfs + "/cgroup.freeze").c_str(), (root + "/hwmon0/energy1_input").c_str()) == 0);
    const std::string d = make_chip(root, "hwmon1", "amdgpu", {{"power1_average", "4000000"}}, kPci1);
    auto s = open_hwmon_at(root);
    REQUIRE(s->channels().size() == 2);
    auto r = poll(*s);
    CHECK(r[0].status == PollStatus::Ok && r[1].status == PollStatus::Ok);
    REQUIRE(::rmdir(kernfs.c_str()) == 0);  // the device is unplugged
    write_file(d + "/power1_average", "5000000\n");
    r = poll(*s);
    CHECK(r[0].status == PollStatus::Gone);
    CHECK(r[1].status == PollStatus::Ok);
    CHECK_NEAR(r[1].energy_j_or_power_w, 5.0, 1e-12);
    CHECK(contains(s->last_error(), "energy1_input") && contains(s->last_error(), "gone"));
    r = poll(*s);  // stays gone, the other channel reads on
    CHECK(r[0].status == PollStatus::Gone && r[1].status == PollStatus::Ok);
}

// --- permissions ----------------------------------------------------------------------------------

namespace {
// Runs fn in a forked child that has dropped root (so that file modes are enforced; the tests run
// as root); returns what fn returned, "" when the child crashed.
std::string as_nobody(const std::function<std::string()>& fn) {
    int p[2];
    if (::pipe(p) != 0) throw std::runtime_error("pipe");
    const pid_t pid = ::fork();
    if (pid == 0) {
        ::close(p[0]);
        std::string out;
        if (::geteuid() == 0 && (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0)) {
            out = "could not drop root";
        } else {
            try {
                out = fn();
            } catch (const std::exception& e) {
                out = std::string("exception: ") + e.what();
            }
        }
        if (::write(p[1], out.data(), out.size()) < 0) _exit(2);
        _exit(0);
    }
    ::close(p[1]);
    std::string out;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(p[0], buf, sizeof buf)) > 0) out.append(buf, static_cast<std::size_t>(n));
    ::close(p[0]);
    int status = 0;
    ::waitpid(pid, &status, 0);
    return out;
}

// A tree nobody may walk, with amd_energy's counters 0400 (as since CVE-2020-8694) and, optionally, a
// readable amdgpu.
std::string make_locked_tree(bool with_gpu) {
    const std::string base = temp_dir();
    ::chmod(base.c_str(), 0755);
    const std::string root = base + "/hwmon";
    const std::string d = make_chip(root, "hwmon0", "amd_energy",
                                    {{"energy1_input", "100"}, {"energy1_label", "Esocket0"}});
    ::chmod(root.c_str(), 0755);
    ::chmod(d.c_str(), 0755);
    ::chmod((d + "/name").c_str(), 0444);
    ::chmod((d + "/energy1_label").c_str(), 0444);
    ::chmod((d + "/energy1_input").c_str(), 0400);
    if (with_gpu) {
        const std::string g = make_chip(root, "hwmon1", "amdgpu", {{"power1_average", "1000000"}}, kPci0);
        ::chmod(g.c_str(), 0755);
        ::chmod((g + "/name").c_str(), 0444);
        ::chmod((g + "/power1_average").c_str(), 0444);
    }
    return root;
}
}  // namespace

TEST(unreadable_amd_energy_is_a_permission_error_with_the_fix) {
    const std::string root = make_locked_tree(false);
    const std::string out = as_nobody([&] {
        const SensorError e = error_of([&] { open_hwmon_at(root); });
        return std::string(category_name(e.category())) + "|" + e.what() + "|" + e.fix();
    });
    CHECK(contains(out, "permission|"));
    CHECK(contains(out, root + "/hwmon0/energy1_input"));
    CHECK(contains(out, "CVE-2020-8694") && contains(out, "chmod") && contains(out, "udev") &&
          contains(out, "greenprobe daemon"));
    if (!contains(out, "permission|")) std::printf("  child said: %s\n", out.c_str());
}

TEST(an_unreadable_chip_is_skipped_with_its_reason_unless_asked_for_by_name) {
    const std::string root = make_locked_tree(true);
    const std::string out = as_nobody([&] {
        auto s = open_hwmon_at(root);
        std::string r = std::to_string(s->channels().size()) + "|" + s->channels()[0].domain + "|" + s->info().at("skipped");
        const SensorError e = error_of([&] { open_hwmon_at(root, {{"chips", "amd_energy"}}); });
        return r + "|" + category_name(e.category()) + "|" + e.what();
    });
    CHECK(contains(out, "1|amdgpu|"));
    CHECK(contains(out, "amd_energy (hwmon0): " + root + "/hwmon0/energy1_input is not readable"));
    CHECK(contains(out, "|permission|hwmon cannot read"));
    if (!contains(out, "1|amdgpu|")) std::printf("  child said: %s\n", out.c_str());
}

TEST_MAIN()
