// The amd-gpu sensor and its usage reader against tests/fixtures/fake_amd_smi.c (AMD SMI's real
// signatures, built by CMake and loaded through the real dlopen path), and the pure parts of
// amd_smi_api (version and power-info layouts, status classes).
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>

#include "amd_smi_api.hpp"
#include "check.hpp"
#include "fixtures.hpp"
#include "greenprobe/clock.hpp"
#include "greenprobe/gpu_usage.hpp"
#include "greenprobe/registry.hpp"

using namespace greenprobe;
using fixtures::error_of;
using fixtures::contains;

namespace {

const char* const kVars[] = {
    "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "FAKE_AMD_SMI_GPUS", "FAKE_AMD_SMI_BASE_W",
    "FAKE_AMD_SMI_SLOPE_W_PER_S", "FAKE_AMD_SMI_T0_NS", "FAKE_AMD_SMI_UPDATE_US", "FAKE_AMD_SMI_WINDOW_US",
    "FAKE_AMD_SMI_RESOLUTION_UJ", "FAKE_AMD_SMI_REPORTED_RESOLUTION_UJ", "FAKE_AMD_SMI_OFFSET_J",
    "FAKE_AMD_SMI_COUNTER", "FAKE_AMD_SMI_COUNTER_GPU", "FAKE_AMD_SMI_VERSION", "FAKE_AMD_SMI_POWER_MEMBER",
    "FAKE_AMD_SMI_NO_POWER", "FAKE_AMD_SMI_LOSE_GPU", "FAKE_AMD_SMI_LOSE_AFTER_MS", "FAKE_AMD_SMI_LOSE_RC",
    "FAKE_AMD_SMI_GFX", "FAKE_AMD_SMI_UMC", "FAKE_AMD_SMI_VRAM_USED_MB", "FAKE_AMD_SMI_VRAM_TOTAL_MB",
    "FAKE_AMD_SMI_NO_USAGE", "FAKE_AMD_SMI_CPU", "FAKE_AMD_SMI_INIT_RC", "FAKE_AMD_SMI_PROCS",
    "FAKE_AMD_SMI_PROC_RC", "FAKE_AMD_SMI_PROC_RC_GPU", "FAKE_AMD_SMI_PROC_HIDDEN"};

// Sets the fake's variables (and the visibility ones) for one test; clears every one before and after.
struct Env {
    Env(std::initializer_list<std::pair<std::string, std::string>> vars) {
        clear();
        for (const auto& [k, v] : vars) ::setenv(k.c_str(), v.c_str(), 1);
    }
    ~Env() { clear(); }
    Env(const Env&) = delete;
    Env& operator=(const Env&) = delete;
    static void clear() {
        for (const char* k : kVars) ::unsetenv(k);
    }
};

std::unique_ptr<Sensor> open_amd(std::map<std::string, std::string> options = {}) {
    options["amd_smi_library"] = FAKE_AMD_SMI_PATH;
    if (!options.count("amd_counter_check_ms")) options["amd_counter_check_ms"] = "20";
    return open_sensor("amd-gpu", Options(options));
}

std::vector<Reading> poll(Sensor& s) {
    std::vector<Reading> r(s.channels().size());
    s.poll(r);
    return r;
}

std::vector<std::string> domains(const Sensor& s) {
    std::vector<std::string> out;
    for (const auto& c : s.channels()) out.push_back(c.domain);
    return out;
}

std::string fake_uuid(unsigned i) {  // as tests/fixtures/fake_amd_smi.c names GPU i
    char buf[64];
    std::snprintf(buf, sizeof buf, "a1b2c3%02x-0000-1000-8000-%012x", 0x11u * (i + 1), i);
    return buf;
}

using Domains = std::vector<std::string>;
constexpr double kRes = 15.2587890625e-6;  // the fake's counter step in joules (1/65536 J)

}  // namespace

// --- the sensor: domains, identity, units ------------------------------------------------------

TEST(amd_every_gpu_by_default_counts_gpus_only_with_uuid_and_pci_address) {
    Env env({{"FAKE_AMD_SMI_GPUS", "3"}, {"FAKE_AMD_SMI_CPU", "1"}});  // socket 0 holds a CPU before its GPU
    auto s = open_amd();
    CHECK(domains(*s) == (Domains{"amdgpu0", "amdgpu1", "amdgpu2"}));
    for (unsigned i = 0; i < 3; ++i) {
        const ChannelInfo& c = s->channels()[i];
        CHECK(c.device_uuid == fake_uuid(i));
        CHECK(c.quantity == Quantity::EnergyCounter && c.note.empty());
        CHECK(c.parent_domain.empty() && !c.shared && !c.estimated);
        CHECK(c.max_power_w == 1500.0 && c.wrap_j == 0.0);
        CHECK(c.resolution_j == kRes && c.resolution_w == 0.0);  // exactly the stated 15.2587890625 µJ, in joules
    }
    CHECK(s->channels()[0].device_bus_id == "0000:0c:00.0");
    CHECK(s->channels()[2].device_bus_id == "0000:2c:00.0");
    const auto info = s->info();
    CHECK(info.at("amdgpu1_uuid") == fake_uuid(1));
    CHECK(info.at("visible_devices_source") == "default");
    CHECK(contains(info.at("visible_devices"), "amdgpu0 amdgpu1 amdgpu2 (every GPU AMD SMI sees)"));
    CHECK(info.at("amd_smi_version") == "24.7.0.0");
    CHECK(contains(info.at("amdgpu0_energy_source"), "energy counter (15.26 µJ steps)"));
    CHECK(s->min_period_ns() == 100000);
}

TEST(amd_counter_is_joules_on_the_known_power_law) {
    // GPU i draws (i+1) x (100 W + 40 W/s x tau); the counter starts at 5000 J. The value read at a
    // poll lies between the exact energy at the update before the poll began and at its end.
    const int64_t t0 = now_ns();
    Env env({{"FAKE_AMD_SMI_GPUS", "2"}, {"FAKE_AMD_SMI_T0_NS", std::to_string(t0)}, {"FAKE_AMD_SMI_SLOPE_W_PER_S", "40"}});
    auto s = open_amd();
    auto exact = [&](unsigned i, int64_t t_ns) {
        const double tau = static_cast<double>(t_ns - t0) * 1e-9;
        return 5000.0 + (i + 1) * (100.0 * tau + 20.0 * tau * tau);
    };
    for (int k = 0; k < 3; ++k) {
        ::usleep(30000);
        const int64_t before = now_ns();
        const auto r = poll(*s);
        const int64_t after = now_ns();
        for (unsigned i = 0; i < 2; ++i) {
            REQUIRE(r[i].status == PollStatus::Ok);
            // the update before the poll is at most 1 ms earlier; floor() takes at most one step off
            CHECK(r[i].energy_j_or_power_w >= exact(i, before - 1000000) - kRes);
            CHECK(r[i].energy_j_or_power_w <= exact(i, after) + 1e-9);
            const double steps = r[i].energy_j_or_power_w / kRes;  // a whole number of counter steps
            CHECK_NEAR(steps, std::round(steps), 1e-3);
        }
    }
}

// --- which GPUs --------------------------------------------------------------------------------

TEST(amd_rocr_visible_devices_by_index_uuid_and_prefix) {
    {
        Env env({{"FAKE_AMD_SMI_GPUS", "4"}, {"ROCR_VISIBLE_DEVICES", "2"}});
        auto s = open_amd();
        CHECK(domains(*s) == Domains{"amdgpu2"});  // its AMD SMI index
        CHECK(s->channels()[0].device_uuid == fake_uuid(2));
        const auto info = s->info();
        CHECK(info.at("visible_devices_source") == "ROCR_VISIBLE_DEVICES");
        CHECK(contains(info.at("visible_devices_mapping"), "indices in AMD SMI's order"));
        CHECK(info.count("amdgpu0_uuid") == 0);
    }
    {
        Env env({{"FAKE_AMD_SMI_GPUS", "4"}, {"ROCR_VISIBLE_DEVICES", "GPU-" + fake_uuid(3) + ",1"}});
        auto s = open_amd();
        CHECK(domains(*s) == (Domains{"amdgpu1", "amdgpu3"}));  // AMD SMI order, whatever the list's
    }
    {
        Env env({{"FAKE_AMD_SMI_GPUS", "4"}, {"ROCR_VISIBLE_DEVICES", "A1B2C333"}});  // a unique prefix, any case
        auto s = open_amd();
        CHECK(domains(*s) == Domains{"amdgpu2"});
        CHECK(s->info().at("visible_devices_mapping") == "exact: by UUID");
    }
    Env env({{"FAKE_AMD_SMI_GPUS", "4"}, {"ROCR_VISIBLE_DEVICES", "1,-1,3"}});  // ends at -1, as ROCm does
    auto s = open_amd();
    CHECK(domains(*s) == Domains{"amdgpu1"});
    CHECK(contains(s->info().at("visible_devices_note"), "'-1'"));
}

// An AMD SMI that does not count its users ends everything at the first shutdown: the usage reader
// going must not take the sensor's handles with it.
TEST(amd_one_user_leaving_does_not_end_the_library_for_the_other) {
    Env env({{"FAKE_AMD_SMI_GPUS", "2"}, {"FAKE_AMD_SMI_UNCOUNTED", "1"}});
    auto s = open_amd();
    {
        auto usage = open_gpu_usage("amd-gpu", Options({{"amd_smi_library", FAKE_AMD_SMI_PATH}}));
        CHECK(usage->read().size() == 2);
    }
    std::vector<Reading> r(s->channels().size());
    s->poll(r);
    for (const auto& x : r) CHECK(x.status == PollStatus::Ok);
}

TEST(amd_hip_visible_devices_counts_among_the_rocr_visible_gpus) {
    {
        Env env({{"FAKE_AMD_SMI_GPUS", "4"}, {"ROCR_VISIBLE_DEVICES", "1,3"}, {"HIP_VISIBLE_DEVICES", "1"}});
        auto s = open_amd();
        CHECK(domains(*s) == Domains{"amdgpu3"});  // HIP's 1 is the second GPU ROCr left: AMD SMI's 3
        CHECK(s->info().at("visible_devices_source") == "ROCR_VISIBLE_DEVICES+HIP_VISIBLE_DEVICES");
        const SensorError e = error_of([] {
            ::setenv("HIP_VISIBLE_DEVICES", "2", 1);  // ROCr left two GPUs: HIP has 0 and 1 only
            open_amd();
        });
        CHECK(e.category() == ErrorCategory::NotFound && contains(e.what(), "HIP_VISIBLE_DEVICES='2'"));
    }
    {
        // ROCr keeps its list's order: with 2,0 GPU 2 is HIP's device 0
        Env env({{"FAKE_AMD_SMI_GPUS", "4"}, {"ROCR_VISIBLE_DEVICES", "2,0"}, {"HIP_VISIBLE_DEVICES", "0"}});
        CHECK(domains(*open_amd()) == Domains{"amdgpu2"});
    }
    Env env({{"FAKE_AMD_SMI_GPUS", "4"}, {"HIP_VISIBLE_DEVICES", "2,0"}});
    CHECK(domains(*open_amd()) == (Domains{"amdgpu0", "amdgpu2"}));  // measured in AMD SMI's order
}

TEST(amd_nothing_visible_or_a_missing_gpu_is_a_clear_error) {
    for (const char* value : {"", "-1"}) {
        Env env({{"FAKE_AMD_SMI_GPUS", "2"}, {"ROCR_VISIBLE_DEVICES", value}});
        const SensorError e = error_of([] { open_amd(); });
        CHECK(e.category() == ErrorCategory::NotFound);
        CHECK(contains(e.what(), "ROCR_VISIBLE_DEVICES='" + std::string(value) + "' makes no GPU visible"));
        CHECK(contains(e.fix(), "gpus=all"));
    }
    {
        Env env({{"FAKE_AMD_SMI_GPUS", "2"}, {"ROCR_VISIBLE_DEVICES", "0,7"}});
        const SensorError e = error_of([] { open_amd(); });
        CHECK(e.category() == ErrorCategory::NotFound && contains(e.what(), "GPU 7"));
        CHECK(contains(e.what(), fake_uuid(1)));  // what there is, to choose from
        CHECK(contains(e.fix(), "amd-smi list"));
    }
    {
        Env env({{"FAKE_AMD_SMI_GPUS", "2"}, {"ROCR_VISIBLE_DEVICES", "GPU-ffff"}});  // no UUID starts so
        CHECK(error_of([] { open_amd(); }).category() == ErrorCategory::NotFound);
    }
    {
        Env env({{"FAKE_AMD_SMI_GPUS", "2"}, {"ROCR_VISIBLE_DEVICES", "GPU-a1b2c3"}});  // both UUIDs start so
        const SensorError e = error_of([] { open_amd(); });
        CHECK(e.category() == ErrorCategory::Config && contains(e.what(), "prefix of several"));
    }
    Env env({{"FAKE_AMD_SMI_GPUS", "2"}, {"ROCR_VISIBLE_DEVICES", "first"}});
    CHECK(error_of([] { open_amd(); }).category() == ErrorCategory::Config);
}

TEST(amd_gpus_option_overrides_the_environment) {
    Env env({{"FAKE_AMD_SMI_GPUS", "4"}, {"ROCR_VISIBLE_DEVICES", "-1"}});
    auto all = open_amd({{"gpus", "all"}});
    CHECK(domains(*all) == (Domains{"amdgpu0", "amdgpu1", "amdgpu2", "amdgpu3"}));
    CHECK(all->info().at("visible_devices_source") == "option gpus");
    CHECK(domains(*open_amd({{"gpus", "0,2"}})) == (Domains{"amdgpu0", "amdgpu2"}));
    CHECK(domains(*open_amd({{"gpus", fake_uuid(1)}})) == Domains{"amdgpu1"});
    CHECK(error_of([] { open_amd({{"gpus", "4"}}); }).category() == ErrorCategory::NotFound);
    CHECK(error_of([] { open_amd({{"gpus", "0,,1"}}); }).category() == ErrorCategory::Config);
}

// --- the open check: counters that stand still, run backwards or state a wrong unit -------------

TEST(amd_frozen_counter_falls_back_to_power_and_says_so) {
    Env env({{"FAKE_AMD_SMI_GPUS", "2"}, {"FAKE_AMD_SMI_COUNTER", "frozen"}, {"FAKE_AMD_SMI_COUNTER_GPU", "1"}});
    auto s = open_amd();
    const auto& ch = s->channels();
    REQUIRE(ch.size() == 2);
    CHECK(ch[0].domain == "amdgpu0" && ch[0].quantity == Quantity::EnergyCounter && ch[0].note.empty());
    CHECK(ch[1].domain == "amdgpu1" && ch[1].quantity == Quantity::Power);
    CHECK(ch[1].resolution_w == 1.0 && ch[1].resolution_j == 0.0 && ch[1].device_uuid == fake_uuid(1));
    CHECK(contains(ch[1].note, "power reading (current_socket_power, whole watts) instead of the energy counter"));
    CHECK(contains(ch[1].note, "stood still for ") &&
          contains(ch[1].note, " ms at the open check while the power reading (current_socket_power)"));
    CHECK(contains(ch[1].note, "said 200 W"));
    CHECK(s->info().at("amdgpu1_energy_source") == ch[1].note);
    CHECK(contains(s->info().at("amdgpu0_energy_source"), "energy counter"));
    const auto r = poll(*s);
    CHECK(r[1].status == PollStatus::Ok);
    CHECK_NEAR(r[1].energy_j_or_power_w, 200.0, 1e-9);  // GPU 1 draws 2 x 100 W
}

TEST(amd_backwards_counter_falls_back_to_power_and_says_so) {
    Env env({{"FAKE_AMD_SMI_GPUS", "1"}, {"FAKE_AMD_SMI_COUNTER", "backwards"}, {"FAKE_AMD_SMI_BASE_W", "300"}});
    auto s = open_amd();
    REQUIRE(s->channels().size() == 1);
    CHECK(s->channels()[0].quantity == Quantity::Power);
    CHECK(contains(s->channels()[0].note, "the energy counter ran backwards at the open check"));
    CHECK(contains(s->info().at("amdgpu0_energy_source"), "ran backwards"));
    CHECK_NEAR(poll(*s)[0].energy_j_or_power_w, 300.0, 1e-9);
}

TEST(amd_counter_with_a_wrong_resolution_falls_back_to_power) {
    // the board counts 15.26 µJ steps but states 1 µJ: its counter seems to rise at ~6.6 W for 100 W
    Env env({{"FAKE_AMD_SMI_REPORTED_RESOLUTION_UJ", "1"}});
    auto s = open_amd();
    CHECK(s->channels()[0].quantity == Quantity::Power);
    CHECK(contains(s->channels()[0].note, "more than 4 times apart"));
}

TEST(amd_without_the_check_a_frozen_counter_is_kept_and_that_is_recorded) {
    Env env({{"FAKE_AMD_SMI_COUNTER", "frozen"}});
    auto s = open_amd({{"amd_counter_check_ms", "0"}});
    CHECK(s->channels()[0].quantity == Quantity::EnergyCounter);
    CHECK(contains(s->info().at("amdgpu0_energy_source"), "not checked (amd_counter_check_ms=0)"));
    CHECK(s->info().at("counter_check") == "not made (amd_counter_check_ms=0)");
    CHECK(error_of([] { open_amd({{"amd_counter_check_ms", "-5"}}); }).category() == ErrorCategory::Config);
}

TEST(amd_no_counter_uses_power_and_neither_is_unsupported) {
    {
        Env env({{"FAKE_AMD_SMI_COUNTER", "none"}});
        auto s = open_amd();
        CHECK(s->channels()[0].quantity == Quantity::Power);
        CHECK(contains(s->channels()[0].note, "no energy counter (amdsmi_get_energy_count: AMD SMI status 2"));
    }
    Env env({{"FAKE_AMD_SMI_COUNTER", "none"}, {"FAKE_AMD_SMI_NO_POWER", "1"}});
    const SensorError e = error_of([] { open_amd(); });
    CHECK(e.category() == ErrorCategory::Unsupported);
    CHECK(contains(e.what(), "amdgpu0: no energy counter") && contains(e.what(), "amdsmi_get_power_info"));
}

TEST(amd_power_info_is_read_in_the_layout_of_the_library_version) {
    // "average": only average_socket_power is filled, so a wrong layout reads a sentinel, not the power
    struct Case {
        const char* version;
        const char* member;
        const char* used;
    };
    const Case cases[] = {{"23.2.0.0", "current", "average_socket_power"},
                          {"24.7.0.0", "current", "current_socket_power"},
                          {"24.7.0.0", "average", "average_socket_power"},
                          {"26.1.0", "current", "socket_power"},
                          {"26.1.0", "average", "average_socket_power"}};
    for (const auto& c : cases) {
        Env env({{"FAKE_AMD_SMI_GPUS", "2"}, {"FAKE_AMD_SMI_COUNTER", "none"}, {"FAKE_AMD_SMI_VERSION", c.version},
                 {"FAKE_AMD_SMI_POWER_MEMBER", c.member}, {"FAKE_AMD_SMI_BASE_W", "250"}});
        auto s = open_amd();
        const auto r = poll(*s);
        REQUIRE(r.size() == 2);
        CHECK_NEAR(r[0].energy_j_or_power_w, 250.0, 1e-9);
        CHECK_NEAR(r[1].energy_j_or_power_w, 500.0, 1e-9);
        if (!contains(s->channels()[0].note, std::string("(") + c.used + ",")) {
            std::printf("  %s/%s: %s\n", c.version, c.member, s->channels()[0].note.c_str());
            CHECK(false);
        }
        // average_socket_power is a smoothed value: its averaging window is stated as up to 1 s
        CHECK(s->channels()[0].averaging_window_max_ns == (std::string(c.used) == "average_socket_power" ? 1000000000 : 20000000));
        CHECK(s->info().at("amd_smi_version") == c.version);
    }
    // a library whose version cannot be read gets no power reading: never a guessed layout
    Env env({{"FAKE_AMD_SMI_COUNTER", "none"}, {"FAKE_AMD_SMI_VERSION", "none"}});
    const SensorError e = error_of([] { open_amd(); });
    CHECK(e.category() == ErrorCategory::Unsupported && contains(e.what(), "the AMD SMI version is unknown"));
}

// --- failures while running and at open --------------------------------------------------------

TEST(amd_lost_gpu_is_gone_and_the_others_go_on) {
    Env env({{"FAKE_AMD_SMI_GPUS", "2"}, {"FAKE_AMD_SMI_LOSE_GPU", "1"}, {"FAKE_AMD_SMI_LOSE_AFTER_MS", "60"}});
    auto s = open_amd();  // the 20 ms check passes before the loss
    auto r = poll(*s);
    CHECK(r[0].status == PollStatus::Ok && r[1].status == PollStatus::Ok);
    ::usleep(60000);
    r = poll(*s);
    CHECK(r[0].status == PollStatus::Ok);
    CHECK(r[1].status == PollStatus::Gone);
    CHECK(contains(s->last_error(), "amdgpu1: amdsmi_get_energy_count: AMD SMI status 31"));
    CHECK(contains(s->last_error(), "the GPU is gone"));
    r = poll(*s);  // stays gone without asking again
    CHECK(r[1].status == PollStatus::Gone && r[0].status == PollStatus::Ok);
}

TEST(amd_missing_library_says_how_to_fix) {
    const SensorError e = error_of([] {
        open_sensor("amd-gpu", Options({{"amd_smi_library", "/nonexistent/libamd_smi.so"}}));
    });
    CHECK(e.category() == ErrorCategory::LibraryMissing);
    CHECK(contains(e.what(), "/nonexistent/libamd_smi.so"));
    CHECK(contains(e.fix(), "GREENPROBE_AMD_SMI_LIBRARY") && contains(e.fix(), "/opt/rocm/lib"));
    // a library that is not AMD SMI: named, with the missing symbol
    const SensorError other = error_of([] { open_sensor("amd-gpu", Options({{"amd_smi_library", FAKE_NVML_PATH}})); });
    CHECK(other.category() == ErrorCategory::LibraryMissing && contains(other.what(), "lacks the required symbol amdsmi_init"));
}

TEST(amd_init_failures_are_classified_with_their_fix) {
    {
        Env env({{"FAKE_AMD_SMI_INIT_RC", "34"}});  // AMDSMI_STATUS_DRIVER_NOT_LOADED
        const SensorError e = error_of([] { open_amd(); });
        CHECK(e.category() == ErrorCategory::LibraryMissing && contains(e.fix(), "amdgpu kernel driver"));
        CHECK(contains(e.what(), "amdsmi_init(AMDSMI_INIT_AMD_GPUS) failed") && contains(e.what(), "DRIVER_NOT_LOADED"));
    }
    {
        Env env({{"FAKE_AMD_SMI_INIT_RC", "10"}});  // AMDSMI_STATUS_NO_PERM
        const SensorError e = error_of([] { open_amd(); });
        CHECK(e.category() == ErrorCategory::Permission && contains(e.fix(), "/dev/kfd"));
    }
    Env env({{"FAKE_AMD_SMI_GPUS", "0"}});
    const SensorError e = error_of([] { open_amd(); });
    CHECK(e.category() == ErrorCategory::NotFound && contains(e.what(), "reports no AMD GPU"));
}

// --- the usage reader --------------------------------------------------------------------------

TEST(amd_usage_reads_activity_and_vram_of_the_measured_gpus) {
    {
        Env env({{"FAKE_AMD_SMI_GPUS", "3"}, {"FAKE_AMD_SMI_GFX", "60"}, {"FAKE_AMD_SMI_UMC", "30"},
                 {"FAKE_AMD_SMI_VRAM_USED_MB", "100"}, {"ROCR_VISIBLE_DEVICES", "0,2"}});
        auto u = open_gpu_usage("amd-gpu", Options({{"amd_smi_library", FAKE_AMD_SMI_PATH}}));
        CHECK(u->kind() == "amd-gpu");
        CHECK(u->names() == (std::vector<std::string>{"amdgpu0 0000:0c:00.0", "amdgpu2 0000:2c:00.0"}));
        CHECK(u->selection() == "ROCR_VISIBLE_DEVICES='0,2'");
        const auto r = u->read();
        REQUIRE(r.size() == 2);
        CHECK(r[0].index == 0 && r[1].index == 2 && r[1].uuid == fake_uuid(2));
        CHECK(r[0].gpu_util_pct == 60 && r[1].gpu_util_pct == 62);  // GPU i reports pct + i
        CHECK(r[0].memory_util_pct == 30 && r[1].memory_util_pct == 32);
        CHECK(r[1].memory_used_bytes == 3LL * 100 * 1024 * 1024);  // GPU i uses (i+1) x USED
        CHECK(r[1].memory_total_bytes == 196592LL * 1024 * 1024);
        CHECK(r[0].error.empty() && r[0].t_ns > 0);
        // the sensor's gpus option wins, as it does for the sensor
        auto one = open_gpu_usage("amd-gpu", Options({{"amd_smi_library", FAKE_AMD_SMI_PATH}, {"gpus", "1"}}));
        CHECK(one->read().size() == 1 && one->read()[0].index == 1);
    }
    {
        Env env({{"FAKE_AMD_SMI_NO_USAGE", "1"}});
        AmdSmiUsage u(FAKE_AMD_SMI_PATH);
        const auto r = u.read();
        CHECK(r[0].gpu_util_pct == -1 && r[0].memory_util_pct == -1 && r[0].memory_used_bytes == -1);
        CHECK(contains(r[0].error, "amdsmi_get_gpu_activity") && contains(r[0].error, "VRAM"));
        CHECK(u.selection() == "every GPU AMD SMI sees");
    }
    CHECK(error_of([] { AmdSmiUsage u("/nonexistent/libamd_smi.so"); }).category() == ErrorCategory::LibraryMissing);
}

// --- per-process use (amdsmi_get_gpu_process_list) ----------------------------------------------

namespace {

// A FAKE_AMD_SMI_PROCS file: "gpu pid watts start_ns end_ns" lines, on CLOCK_MONOTONIC.
std::string procs_file(const std::vector<std::string>& lines) {
    const std::string path = fixtures::temp_dir() + "/procs.txt";
    std::string text;
    for (const auto& l : lines) text += l + "\n";
    fixtures::write_file(path, text);
    return path;
}

std::string span(int gpu, unsigned pid, double watts, int64_t a, int64_t b) {
    return std::to_string(gpu) + " " + std::to_string(pid) + " " + std::to_string(watts) + " " + std::to_string(a) +
           " " + std::to_string(b);
}

using GfxMap = std::map<std::pair<unsigned, uint32_t>, int64_t>;
bool has(const GfxMap& m, unsigned gpu, uint32_t pid) { return m.count({gpu, pid}) == 1; }
int64_t at(const GfxMap& m, unsigned gpu, uint32_t pid) { return has(m, gpu, pid) ? m.at({gpu, pid}) : -1; }

GfxMap gfx_by_gpu_and_pid(const std::vector<GpuProcessSample>& samples) {
    GfxMap out;
    for (const auto& x : samples) out[{x.index, x.pid}] = x.gfx_busy_ns;
    return out;
}

}  // namespace

TEST(amd_processes_give_each_pid_its_growing_gfx_time_in_either_layout) {
    const int64_t now = now_ns(), s = 1000000000;
    const std::string procs = procs_file({span(0, 4101, 50, now - 2 * s, now + 60 * s),
                                          span(0, 4102, 80, now - s, now - s / 2), span(1, 4103, 90, now - s, now + 60 * s),
                                          span(1, 4104, 10, now + 60 * s, now + 61 * s)});  // not begun: not listed
    for (const char* version : {"24.7.0.0", "26.1.0"}) {  // name[32] and name[256] layouts
        Env env({{"FAKE_AMD_SMI_GPUS", "2"}, {"FAKE_AMD_SMI_PROCS", procs}, {"FAKE_AMD_SMI_VERSION", version}});
        AmdSmiUsage u(FAKE_AMD_SMI_PATH);
        CHECK(u.process_support().empty());
        const auto first = u.processes(0);
        auto gfx = gfx_by_gpu_and_pid(first);
        CHECK(gfx.size() == 3 && has(gfx, 0, 4101) && has(gfx, 0, 4102) && has(gfx, 1, 4103));
        CHECK(at(gfx, 0, 4102) == s / 2);                          // its one span, over
        CHECK(at(gfx, 0, 4101) >= 2 * s && at(gfx, 0, 4101) < 3 * s);  // busy since 2 s ago
        for (const auto& x : first) CHECK(x.t_ns >= now && x.sm_util_pct == 0 && x.t_us == 0);
        CHECK(u.process_errors().empty());
        ::usleep(20000);
        auto later = gfx_by_gpu_and_pid(u.processes(0));
        CHECK(at(later, 0, 4101) >= at(gfx, 0, 4101) + 20000000);  // the cumulative count grows with its busy time
        CHECK(at(later, 1, 4103) >= at(gfx, 1, 4103) + 20000000 && at(later, 0, 4102) == s / 2);
    }
}

TEST(amd_processes_read_again_when_the_list_grew_and_name_the_gpu_that_failed) {
    const int64_t now = now_ns(), s = 1000000000;
    std::vector<std::string> lines;
    for (unsigned k = 0; k < 12; ++k) lines.push_back(span(0, 5000 + k, 10, now - s, now + 60 * s));
    lines.push_back(span(1, 6000, 10, now - s, now + 60 * s));
    const std::string procs = procs_file(lines);
    {
        // the count says 2, the list holds 12: more than the room given (2 + 8): read again with 12
        Env env({{"FAKE_AMD_SMI_GPUS", "2"}, {"FAKE_AMD_SMI_PROCS", procs}, {"FAKE_AMD_SMI_PROC_HIDDEN", "10"},
                 {"ROCR_VISIBLE_DEVICES", "0"}});
        AmdSmiUsage u(FAKE_AMD_SMI_PATH);
        const auto gfx = gfx_by_gpu_and_pid(u.processes(0));
        CHECK(gfx.size() == 12 && has(gfx, 0, 5000) && has(gfx, 0, 5011));
        CHECK(u.process_errors().empty());
    }
    {
        Env env({{"FAKE_AMD_SMI_GPUS", "2"}, {"FAKE_AMD_SMI_PROCS", procs}, {"FAKE_AMD_SMI_PROC_RC", "10"},
                 {"FAKE_AMD_SMI_PROC_RC_GPU", "1"}});
        AmdSmiUsage u(FAKE_AMD_SMI_PATH);
        const auto gfx = gfx_by_gpu_and_pid(u.processes(0));
        CHECK(gfx.size() == 12 && !has(gfx, 1, 6000));
        const auto errors = u.process_errors();
        REQUIRE(errors.size() == 1);
        CHECK(errors[0].index == 1 && contains(errors[0].error, "amdsmi_get_gpu_process_list") &&
              contains(errors[0].error, "NO_PERM"));
    }
}

TEST(amd_processes_without_the_symbol_or_a_known_layout_say_why) {
    {
        Env env({});
        amdsmi::Api api = amdsmi::Api::load(FAKE_AMD_SMI_PATH);
        CHECK(api.GetGpuProcessList != nullptr && api.process_list_support().empty());
        api.GetGpuProcessList = nullptr;  // as a libamd_smi.so without it
        CHECK(contains(api.process_list_support(), "has no amdsmi_get_gpu_process_list"));
        std::vector<amdsmi::ProcessInfo> got;
        CHECK(api.read_processes(nullptr, got) == amdsmi::kNotSupported && got.empty());
        api.shut_down_and_unload();
    }
    {
        Env env({{"FAKE_AMD_SMI_VERSION", "none"}});  // the version cannot be read: no layout is guessed
        AmdSmiUsage u(FAKE_AMD_SMI_PATH);
        CHECK(contains(u.process_support(), "layout of its amdsmi_proc_info_t is not known"));
        CHECK(u.processes(0).empty() && u.process_errors().empty());
    }
}

// --- the pure parts ------------------------------------------------------------------------------

TEST(amd_smi_process_info_layouts_decode) {
    using namespace greenprobe::amdsmi;
    Version v24, v26;
    v24.known = v26.known = true;
    v24.year = 24;
    v26.major = 26;
    CHECK(proc_layout(v24) == ProcLayout::Name32 && proc_info_size(ProcLayout::Name32) == 224);
    CHECK(proc_layout(v26) == ProcLayout::Name256 && proc_info_size(ProcLayout::Name256) == 704);
    CHECK(proc_layout(Version{}) == ProcLayout::Unknown && proc_info_size(ProcLayout::Unknown) == 0);
    CHECK(proc_info_size(ProcLayout::Name256) <= kProcInfoStride);
    for (ProcLayout l : {ProcLayout::Name32, ProcLayout::Name256}) {
        const std::size_t name = l == ProcLayout::Name32 ? 32 : 256;
        unsigned char buf[kProcInfoStride] = {};
        std::memset(buf, 'x', name);  // a name that fills its field: no NUL
        const uint32_t pid = 4242;
        const uint64_t mem = 7, gfx = 123456789012ull, enc = 5, vram = 11;
        std::memcpy(buf + name, &pid, 4);
        std::memcpy(buf + name + 8, &mem, 8);
        std::memcpy(buf + name + 16, &gfx, 8);
        std::memcpy(buf + name + 24, &enc, 8);
        std::memcpy(buf + name + 16 + 64 + 16, &vram, 8);
        const ProcessInfo p = decode_process(buf, l);
        CHECK(p.pid == 4242 && p.gfx_ns == gfx && p.enc_ns == 5 && p.mem_bytes == 7 && p.vram_bytes == 11);
        CHECK(p.name == std::string(name, 'x'));
    }
}

TEST(amd_smi_versions_and_power_layouts_decode) {
    using namespace greenprobe::amdsmi;
    RawVersion old{};
    old.word[0] = 24;
    old.word[1] = 7;
    old.word[2] = 1;
    Version v = decode_version(old);
    CHECK(v.known && v.year == 24 && v.major == 7 && v.text == "24.7.1.0");
    CHECK(power_layout(v) == PowerLayout::CurrentAverage);
    old.word[0] = 23;
    old.word[1] = 2;
    CHECK(power_layout(decode_version(old)) == PowerLayout::OldAverage);
    old.word[1] = 4;
    CHECK(power_layout(decode_version(old)) == PowerLayout::CurrentAverage);
    RawVersion fresh{};
    fresh.word[0] = 26;
    fresh.word[1] = 1;
    v = decode_version(fresh);
    CHECK(v.known && v.year == 0 && v.major == 26 && v.text == "26.1.0");
    CHECK(power_layout(v) == PowerLayout::SocketPower64);
    CHECK(!decode_version(RawVersion{}).known && power_layout(decode_version(RawVersion{})) == PowerLayout::Unknown);

    unsigned char buf[kPowerInfoBuffer] = {};
    const uint64_t w64 = 612, none64 = ~0ull;
    const uint32_t w32 = 611, none32 = 0xFFFFFFFFu;
    std::memcpy(buf, &w64, 8);
    std::memcpy(buf + 8, &w32, 4);
    std::memcpy(buf + 12, &none32, 4);
    PowerReading p = decode_power(buf, PowerLayout::SocketPower64);
    CHECK(p.ok && p.watts == 612.0 && std::strcmp(p.member, "socket_power") == 0);
    std::memcpy(buf, &none64, 8);
    p = decode_power(buf, PowerLayout::SocketPower64);
    CHECK(p.ok && p.watts == 611.0 && std::strcmp(p.member, "current_socket_power") == 0);
    std::memcpy(buf + 8, &none32, 4);
    CHECK(!decode_power(buf, PowerLayout::SocketPower64).ok);  // nothing filled in
    CHECK(!decode_power(buf, PowerLayout::Unknown).ok);
    unsigned char old_buf[kPowerInfoBuffer] = {};  // a board that leaves current at 0 and fills average
    const uint32_t avg = 95;
    std::memcpy(old_buf + 4, &avg, 4);
    p = decode_power(old_buf, PowerLayout::CurrentAverage);
    CHECK(p.ok && p.watts == 95.0 && std::strcmp(p.member, "average_socket_power") == 0);
}

TEST(amd_smi_status_classes) {
    using namespace greenprobe::amdsmi;
    CHECK(classify(kNoPerm).category == ErrorCategory::Permission);
    CHECK(classify(kDriverNotLoaded).category == ErrorCategory::LibraryMissing);
    CHECK(classify(kNotSupported).category == ErrorCategory::Unsupported && !classify(kNotSupported).lost);
    CHECK(classify(kNotFound).lost && classify(kFileError).lost && classify(kAmdgpuRestartErr).lost);
    CHECK(classify(kBusy).transient && classify(kRetry).transient && !classify(kBusy).lost);
    CHECK(!classify(kUnknownError).transient && classify(kUnknownError).category == ErrorCategory::Io);
    Bdf b{(0x1ull << 16) | (0xc1ull << 8) | (0x3ull << 3) | 0x2ull};
    CHECK(b.text() == "0001:c1:03.2");
}

TEST_MAIN()
