// Sampler benchmarks, side by side in one run:
//   poll   polling rate, CPU cost and lateness per sensor kind vs this machine's floor (a bare
//          absolute-deadline timer loop at the same rate)
//   edges  how precisely the sampler dates a counter update, against the synthetic sensor's true
//          update times
//   ring   SPSC ring push+pop cost
//   drops  every stand-in at 10 kHz at once for SECONDS: drops and lateness
//   real   the real sensors of this machine (every registry kind that opens with the GREENPROBE_*
//          environment, estimates and synthetic left out): poll cost against the floor, then per
//          channel the update period the adaptive schedule learns and how narrowly each update is
//          dated (the width of the poll window that saw it), fixed against adaptive polling
// Usage: bench_sampler poll SECONDS | edges SECONDS | drops SECONDS | ring | real SECONDS
#include <sys/resource.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "greenprobe/clock.hpp"
#include "greenprobe/registry.hpp"
#include "greenprobe/sampler.hpp"

using namespace greenprobe;

namespace {

double cpu_seconds() {
    timespec ts{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

struct Result {
    std::string name;
    double rate_hz = 0, cpu_pct = 0, late_pct = 0, max_lag_ms = 0, mean_lag_us = 0;
    uint64_t drops = 0, samples = 0;
};

// The floor: nothing but the absolute-deadline wake-ups.
Result bare_loop(int64_t period_ns, double seconds) {
    std::atomic<bool> stop{false};
    uint64_t polls = 0, late = 0;
    int64_t max_lag = 0, sum_lag = 0;
    const double c0 = cpu_seconds();
    const int64_t t_start = now_ns();
    std::thread th([&] {
        int64_t deadline = now_ns();
        while (!stop.load(std::memory_order_relaxed)) {
            sleep_until_ns(deadline);
            const int64_t lag = now_ns() - deadline;
            max_lag = std::max(max_lag, lag);
            sum_lag += lag;
            if (lag > period_ns) ++late;
            ++polls;
            deadline += period_ns;
            const int64_t now = now_ns();
            if (now - deadline > period_ns) deadline += (now - deadline) / period_ns * period_ns;
        }
    });
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
    stop = true;
    th.join();
    const double wall = static_cast<double>(now_ns() - t_start) * 1e-9;
    Result r;
    r.name = "floor (bare timer loop)";
    r.rate_hz = static_cast<double>(polls) / wall;
    r.cpu_pct = (cpu_seconds() - c0) / wall * 100.0;
    r.late_pct = polls ? 100.0 * static_cast<double>(late) / static_cast<double>(polls) : 0;
    r.max_lag_ms = static_cast<double>(max_lag) * 1e-6;
    r.mean_lag_us = polls ? static_cast<double>(sum_lag) / static_cast<double>(polls) * 1e-3 : 0;
    return r;
}

Result run_sampler(const std::string& name, std::shared_ptr<Sensor> sensor, int64_t period_ns, double seconds) {
    SamplerConfig cfg;
    cfg.period_ns = period_ns;
    Sampler s({std::move(sensor)}, cfg);
    std::vector<Sample> buf;
    buf.reserve(1 << 20);
    const double c0 = cpu_seconds();
    const int64_t t_start = now_ns();
    s.start();
    const int64_t t_end = t_start + static_cast<int64_t>(seconds * 1e9);
    uint64_t samples = 0;
    while (now_ns() < t_end) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the Python drain interval
        buf.clear();
        samples += s.drain(buf);
    }
    s.stop();
    buf.clear();
    samples += s.drain(buf);
    const double wall = static_cast<double>(now_ns() - t_start) * 1e-9;
    auto st = s.stats()[0];
    Result r;
    r.name = name;
    r.rate_hz = static_cast<double>(st.polls) / wall;
    r.cpu_pct = (cpu_seconds() - c0) / wall * 100.0;
    r.late_pct = st.polls ? 100.0 * static_cast<double>(st.late_polls) / static_cast<double>(st.polls) : 0;
    r.max_lag_ms = static_cast<double>(st.max_lag_ns) * 1e-6;
    r.mean_lag_us = st.polls ? static_cast<double>(st.sum_lag_ns) / static_cast<double>(st.polls) * 1e-3 : 0;
    r.drops = st.drops;
    r.samples = samples;
    return r;
}

std::string make_tmp() {
    char tmpl[] = "/tmp/greenprobe-bench-XXXXXX";
    return mkdtemp(tmpl);
}

void write_file(const std::string& p, const std::string& s) { std::ofstream(p) << s; }

std::shared_ptr<Sensor> powercap_standin(const std::string& dir) {
    const std::string z = dir + "/powercap/intel-rapl:0";
    std::system(("mkdir -p '" + z + "'").c_str());
    write_file(z + "/name", "package-0\n");
    write_file(z + "/max_energy_range_uj", "262143328850\n");
    write_file(z + "/energy_uj", "123456789\n");
    return open_sensor("rapl-powercap", Options({{"powercap_root", dir + "/powercap"}}));
}

std::shared_ptr<Sensor> msr_standin(const std::string& dir) {
    std::system(("mkdir -p '" + dir + "/dev/cpu/0' '" + dir + "/proc' '" + dir + "/sys/cpu0/topology'").c_str());
    write_file(dir + "/proc/cpuinfo", "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 85\n");
    write_file(dir + "/sys/cpu0/topology/physical_package_id", "0\n");
    write_file(dir + "/sys/cpu0/topology/core_id", "0\n");
    const std::string msr = dir + "/dev/cpu/0/msr";
    const int fd = ::open(msr.c_str(), O_WRONLY | O_CREAT, 0644);
    const uint64_t unit = 0xA1003, pkg = 12345, core = 777;
    if (::pwrite(fd, &unit, 8, 0x606) != 8 || ::pwrite(fd, &pkg, 8, 0x611) != 8 || ::pwrite(fd, &core, 8, 0x639) != 8) {
        std::perror("pwrite");
    }
    ::close(fd);
    return open_sensor("rapl-msr", Options({{"msr_path", dir + "/dev/cpu/{cpu}/msr"}, {"proc_root", dir + "/proc"},
                                            {"sysfs_cpu_root", dir + "/sys"}}));
}

std::shared_ptr<Sensor> hwmon_standin(const std::string& dir) {
    // an xe GPU's energy counter (µJ) and an ACPI power meter's averaged power (µW)
    std::system(("mkdir -p '" + dir + "/hwmon/hwmon0' '" + dir + "/hwmon/hwmon1'").c_str());
    write_file(dir + "/hwmon/hwmon0/name", "xe\n");
    write_file(dir + "/hwmon/hwmon0/energy1_input", "123456789\n");
    write_file(dir + "/hwmon/hwmon0/energy1_label", "card\n");
    write_file(dir + "/hwmon/hwmon1/name", "power_meter\n");
    write_file(dir + "/hwmon/hwmon1/power1_average", "250000000\n");
    write_file(dir + "/hwmon/hwmon1/power1_average_interval", "50\n");
    return open_sensor("hwmon", Options({{"hwmon_root", dir + "/hwmon"}}));
}

std::shared_ptr<Sensor> amd_standin() {
    return open_sensor("amd-gpu", Options({{"amd_smi_library", FAKE_AMD_SMI_PATH}, {"amd_counter_check_ms", "0"}}));
}

void print(const Result& r, const Result& floor) {
    std::printf("| %-28s | %8.0f | %6.2f | %5.2fx | %6.2f | %8.1f | %7.2f | %5llu | %8llu |\n", r.name.c_str(), r.rate_hz,
                r.cpu_pct, floor.cpu_pct > 0 ? r.cpu_pct / floor.cpu_pct : 0.0, r.late_pct, r.mean_lag_us, r.max_lag_ms,
                static_cast<unsigned long long>(r.drops), static_cast<unsigned long long>(r.samples));
}

int bench_poll(double seconds) {
    const std::string dir = make_tmp();
    ::setenv("FAKE_NVML_UPDATE_MS", "100", 1);
    std::printf("| sensor | polls/s | CPU %% of a core | vs floor | late %% | mean lag µs | max lag ms | drops | samples stored |\n");
    std::printf("|---|---|---|---|---|---|---|---|---|\n");
    for (int khz : {1, 5, 10}) {
        const int64_t period = 1000000 / khz;
        const Result floor = bare_loop(period, seconds);
        Result f = floor;
        f.name = "floor @ " + std::to_string(khz) + " kHz";
        print(f, floor);
        print(run_sampler("synthetic @ " + std::to_string(khz) + " kHz",
                          open_sensor("synthetic", Options({{"update_us", "1000"}})), period, seconds), floor);
        print(run_sampler("rapl-powercap* @ " + std::to_string(khz) + " kHz", powercap_standin(dir), period, seconds), floor);
        print(run_sampler("rapl-msr* @ " + std::to_string(khz) + " kHz", msr_standin(dir), period, seconds), floor);
        print(run_sampler("nvml* @ " + std::to_string(khz) + " kHz",
                          open_sensor("nvml", Options({{"nvml_library", FAKE_NVML_PATH}, {"nvml_min_period_us", "50"}})),
                          period, seconds),
              floor);
        print(run_sampler("hwmon* @ " + std::to_string(khz) + " kHz", hwmon_standin(dir), period, seconds), floor);
        print(run_sampler("amd-gpu* @ " + std::to_string(khz) + " kHz", amd_standin(), period, seconds), floor);
    }
    std::printf("\n* stand-ins: plain files in /tmp and the fake NVML and AMD SMI libraries; real sysfs, MSR, NVML and "
                "AMD SMI reads cost more. rapl-perf: one read() syscall per event and package, measured by "
                "bench_read_cost.\n");
    return 0;
}

// Runs the sampler for `seconds`, drained every 50 ms as the Python layer does; every sample.
std::vector<Sample> collect(Sampler& s, double seconds) {
    std::vector<Sample> all, buf;
    const int64_t ts = now_ns();
    s.start();
    while (now_ns() - ts < static_cast<int64_t>(seconds * 1e9)) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        buf.clear();
        s.drain(buf);
        all.insert(all.end(), buf.begin(), buf.end());
    }
    s.stop();
    s.drain(all);
    return all;
}

// Dating of counter updates: a synthetic counter updating every `update_us` from a known t0,
// fixed polling vs the adaptive schedule (poll only in a window around each predicted update).
void edge_row(int64_t update_ns, int khz, bool adaptive, double seconds) {
    const int64_t period = 1000000 / khz;
    const int64_t t0 = now_ns();
    auto sensor = open_sensor("synthetic", Options({{"waveform", "constant"}, {"update_us", std::to_string(update_ns / 1000)},
                                                    {"t0_ns", std::to_string(t0)}}));
    SamplerConfig cfg;
    cfg.period_ns = period;
    cfg.adaptive = adaptive;
    Sampler s({std::shared_ptr<Sensor>(std::move(sensor))}, cfg);
    const double c0 = cpu_seconds();
    const int64_t ts = now_ns();
    const std::vector<Sample> all = collect(s, seconds);
    const double wall = static_cast<double>(now_ns() - ts) * 1e-9;
    const auto st = s.stats()[0];
    std::vector<double> err;
    for (const auto& x : all) {
        if (!(x.flags & kChanged) || (x.flags & kFirst)) continue;
        if (x.t_ns - ts < static_cast<int64_t>(seconds * 0.2e9)) continue;  // after the learning phase
        const int64_t mid = x.prev_t_ns + (x.t_ns - x.prev_t_ns) / 2;
        const int64_t truth = t0 + (x.t_ns - t0) / update_ns * update_ns;  // last update before the read
        err.push_back(std::fabs(static_cast<double>(mid - truth)) * 1e-3);
    }
    std::sort(err.begin(), err.end());
    auto q = [&](double p) { return err.empty() ? NAN : err[static_cast<std::size_t>(p * static_cast<double>(err.size() - 1))]; };
    std::printf("| %.0f ms | %s @ %d kHz | %.0f | %.2f | %.1f | %.1f | %.1f | %zu | %llu |\n", static_cast<double>(update_ns) * 1e-6,
                adaptive ? "adaptive" : "fixed", khz, static_cast<double>(st.polls) / wall,
                (cpu_seconds() - c0) / wall * 100.0, q(0.5), q(0.95), err.empty() ? NAN : err.back(), err.size(),
                static_cast<unsigned long long>(st.edge_misses));
}

int bench_edges(double seconds) {
    std::printf("| sensor update | schedule | polls/s | CPU %% of a core | median abs error µs | p95 µs | max µs | edges | missed windows |\n");
    std::printf("|---|---|---|---|---|---|---|---|---|\n");
    for (int64_t update : {1000000LL, 100000000LL}) {
        // a 100 ms sensor needs ~0.5 s to learn its period: run it long enough to reach steady state
        const double secs = update > 10000000 ? std::max(seconds, 20.0) : seconds;
        for (int khz : {1, 10, 20}) {
            edge_row(update, khz, false, secs);
            edge_row(update, khz, true, secs);
        }
    }
    return 0;
}

// Zero drops over a long run: every stand-in sensor at once, 10 kHz each, drained every 50 ms.
int bench_drops(double seconds) {
    const std::string dir = make_tmp();
    ::setenv("FAKE_NVML_UPDATE_MS", "100", 1);
    SamplerConfig cfg;
    cfg.period_ns = 100000;
    std::vector<std::shared_ptr<Sensor>> sensors = {
        open_sensor("synthetic", Options({{"update_us", "1000"}})), powercap_standin(dir), msr_standin(dir),
        open_sensor("nvml", Options({{"nvml_library", FAKE_NVML_PATH}, {"nvml_min_period_us", "50"}}))};
    Sampler s(sensors, cfg);
    std::vector<Sample> buf;
    uint64_t samples = 0;
    const int64_t t0 = now_ns();
    s.start();
    while (now_ns() - t0 < static_cast<int64_t>(seconds * 1e9)) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        buf.clear();
        samples += s.drain(buf);
    }
    s.stop();
    buf.clear();
    samples += s.drain(buf);
    std::printf("| sensor | polls | polls/s | late %% | max lag ms | drops |\n|---|---|---|---|---|---|\n");
    const double wall = static_cast<double>(now_ns() - t0) * 1e-9;
    uint64_t drops = 0;
    for (const auto& st : s.stats()) {
        drops += st.drops;
        std::printf("| %s | %llu | %.0f | %.2f | %.2f | %llu |\n", st.sensor.c_str(), static_cast<unsigned long long>(st.polls),
                    static_cast<double>(st.polls) / wall,
                    st.polls ? 100.0 * static_cast<double>(st.late_polls) / static_cast<double>(st.polls) : 0.0,
                    static_cast<double>(st.max_lag_ns) * 1e-6, static_cast<unsigned long long>(st.drops));
    }
    std::printf("\n%llu samples stored over %.0f s, %llu dropped\n", static_cast<unsigned long long>(samples), wall,
                static_cast<unsigned long long>(drops));
    return drops == 0 ? 0 : 1;
}

int bench_ring() {
    SpscRing<Sample> r(1 << 16);
    constexpr int kN = 20000000;
    Sample s{1, 0, 1.0, 0, 1};
    const int64_t t0 = now_ns();
    for (int i = 0; i < kN; ++i) {
        s.t_ns = i;
        r.try_push(s);
        Sample out;
        r.try_pop(out);
    }
    const int64_t t1 = now_ns();
    std::printf("| same thread | push+pop | %.1f ns |\n", static_cast<double>(t1 - t0) / kN);
    // cross-thread: producer pushes, consumer drains in batches
    std::atomic<bool> done{false};
    uint64_t popped = 0;
    std::thread consumer([&] {
        Sample buf[4096];
        while (!done.load(std::memory_order_acquire) || r.size() > 0) popped += r.pop_into(buf, 4096);
    });
    uint64_t pushed = 0;
    const int64_t t2 = now_ns();
    for (int i = 0; i < kN; ++i) {
        s.t_ns = i;
        if (r.try_push(s)) ++pushed;
    }
    const int64_t t3 = now_ns();
    done.store(true, std::memory_order_release);
    consumer.join();
    std::printf("| two threads | try_push (consumer draining in batches) | %.1f ns per push; %llu of %d refused (full ring) |\n",
                static_cast<double>(t3 - t2) / kN, static_cast<unsigned long long>(kN - pushed), kN);
    return popped == pushed ? 0 : 1;
}

// The options a kind gets from the environment, as the Python layer resolves them.
Options env_options(const SensorKind& k, std::map<std::string, std::string> extra = {}) {
    for (const auto& o : k.options) {
        const char* v = o.env[0] ? std::getenv(o.env) : nullptr;
        if (v && *v && !extra.count(o.key)) extra[o.key] = v;
    }
    return Options(std::move(extra));
}

struct RealKind {
    std::string name;
    const SensorKind* row;
};

std::shared_ptr<Sensor> open_real(const RealKind& k, bool uncapped) {
    // NVML's driver lock: the kind never polls faster than nvml_min_period_us (1 ms). To measure
    // the cost of a call at 5 kHz the cap is lifted here, and only here.
    std::map<std::string, std::string> extra;
    if (uncapped && k.name == "nvml") extra["nvml_min_period_us"] = "50";
    return open_sensor(k.name, env_options(*k.row, extra));
}

int bench_real(double seconds) {
    std::vector<RealKind> kinds;
    for (const auto& k : sensor_kinds()) {
        if (k.auto_role == AutoRole::None || k.auto_role == AutoRole::Estimate) continue;
        try {
            open_sensor(k.name, env_options(k));
            kinds.push_back({k.name, &k});
        } catch (const SensorError& e) {
            std::printf("- %s: not here: %s\n", k.name, e.what());
        }
    }
    if (kinds.empty()) {
        std::printf("\nno real sensor opens on this machine\n");
        return 1;
    }
    std::printf("\n| sensor | polls/s | CPU %% of a core | vs floor | CPU µs per poll above the floor | late %% | max lag ms |\n");
    std::printf("|---|---|---|---|---|---|---|\n");
    for (int khz : {1, 5}) {
        const int64_t period = 1000000 / khz;
        const Result floor = bare_loop(period, seconds);
        std::printf("| floor @ %d kHz | %.0f | %.2f | 1.00x | 0 | %.2f | %.2f |\n", khz, floor.rate_hz, floor.cpu_pct,
                    floor.late_pct, floor.max_lag_ms);
        for (const auto& k : kinds) {
            const Result r = run_sampler(k.name, open_real(k, true), period, seconds);
            const double per_poll_us = r.rate_hz > 0 ? (r.cpu_pct - floor.cpu_pct) / 100.0 / r.rate_hz * 1e6 : NAN;
            std::printf("| %s @ %d kHz | %.0f | %.2f | %.2fx | %.1f | %.2f | %.2f |\n", k.name.c_str(), khz, r.rate_hz,
                        r.cpu_pct, floor.cpu_pct > 0 ? r.cpu_pct / floor.cpu_pct : 0.0, per_poll_us, r.late_pct,
                        r.max_lag_ms);
        }
    }
    std::printf("\nDating of updates per channel (%.1f s each; window = the poll interval that saw the value change:\n"
                "the update is dated to its middle, within +- half of it):\n\n", seconds);
    std::printf("| sensor | domain | schedule | polls/s | CPU %% | learned update period ms | updates | median window µs | p95 window µs |\n");
    std::printf("|---|---|---|---|---|---|---|---|---|\n");
    for (const auto& k : kinds) {
        for (const auto& [adaptive, khz] : std::vector<std::pair<bool, int>>{{false, 1}, {true, 1}, {true, 10}}) {
            SamplerConfig cfg;
            cfg.period_ns = 1000000 / khz;
            cfg.adaptive = adaptive;
            Sampler s({open_real(k, khz > 1)}, cfg);
            const double c0 = cpu_seconds();
            const int64_t ts = now_ns();
            const std::vector<Sample> all = collect(s, seconds);
            const double wall = static_cast<double>(now_ns() - ts) * 1e-9;
            const auto st = s.stats()[0];
            const auto channels = s.channels();
            for (std::size_t c = 0; c < st.learned_update_periods_ns.size(); ++c) {
                std::vector<double> width;
                for (const auto& x : all) {
                    if (x.channel != c || !(x.flags & kChanged) || (x.flags & kFirst)) continue;
                    if (x.t_ns - ts < static_cast<int64_t>(seconds * 0.2e9)) continue;  // after learning
                    width.push_back(static_cast<double>(x.t_ns - x.prev_t_ns) * 1e-3);
                }
                std::sort(width.begin(), width.end());
                auto q = [&](double p) {
                    return width.empty() ? NAN : width[static_cast<std::size_t>(p * static_cast<double>(width.size() - 1))];
                };
                const std::string domain =
                    c < channels.size() ? channels[c].info.domain +
                                              (channels[c].info.quantity == Quantity::Power ? " (power)" : " (energy)")
                                        : "?";
                std::printf("| %s | %s | %s @ %d kHz | %.0f | %.2f | %.2f | %zu | %.0f | %.0f |\n", k.name.c_str(),
                            domain.c_str(), adaptive ? "adaptive" : "fixed", khz,
                            static_cast<double>(st.polls) / wall, (cpu_seconds() - c0) / wall * 100.0,
                            static_cast<double>(st.learned_update_periods_ns[c]) * 1e-6, width.size(), q(0.5), q(0.95));
            }
        }
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    const std::string mode = argc > 1 ? argv[1] : "poll";
    const double seconds = argc > 2 ? std::atof(argv[2]) : 10.0;
    if (mode == "poll") return bench_poll(seconds);
    if (mode == "edges") return bench_edges(seconds);
    if (mode == "ring") return bench_ring();
    if (mode == "drops") return bench_drops(seconds);
    if (mode == "real") return bench_real(seconds);
    std::fprintf(stderr, "usage: bench_sampler poll SECONDS | edges SECONDS | drops SECONDS | ring | real SECONDS\n");
    return 2;
}
