// cpu-estimate: an ESTIMATE of CPU energy where no sensor exists (VMs, containers, CI machines).
// power = idle_w + (rated_w - idle_w) * utilisation, integrated over the jiffies of the aggregate
// line of /proc/stat: an energy counter,
//     E = (idle_w * total + (rated_w - idle_w) * busy) / (cpus * USER_HZ)   joules since open,
// total and busy the jiffies counted since open over all CPUs (one second of wall time is cpus x
// USER_HZ of them). It moves at every jiffy and is exact for the model between any two polls. (It
// was a power reading, the utilisation between two polls: at 10 ms polls a reading holds one or two
// jiffies, and the sampler keeps a reading only when it changes, so a short burst was taken for the
// power since the last kept reading, up to the 50 ms keep-alive: +5 W over a 12.5 W idle here.)
// Every channel is flagged `estimated`.
//
// Options:
//   proc_root=/proc          where stat and cpuinfo live
//   cpu_tdp_w=<guess>        rated power of the CPU(s); default 10 W per logical CPU (15..280 W)
//   idle_fraction=0.3        idle power as a fraction of the rated power
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "cpu_info.hpp"
#include "fileio.hpp"
#include "greenprobe/registry.hpp"

namespace greenprobe {
namespace {

class CpuEstimateSensor final : public Sensor {
  public:
    explicit CpuEstimateSensor(const Options& o) {
        const std::string proc = o.get("proc_root", "/proc");
        stat_path_ = proc + "/stat";
        int e = Fd::open_ro(stat_path_, fd_);
        if (e != 0) {
            throw errno_error(e, "cpu-estimate cannot read CPU times", stat_path_,
                              "mount procfs, or set GREENPROBE_PROC_ROOT to where it is mounted");
        }
        const CpuIdentity id = read_cpu_identity(proc);
        const int cpus = std::max(1, id.logical_cpus);
        tdp_source_ = o.has("cpu_tdp_w") ? "option cpu_tdp_w" : "default: 10 W per logical CPU, clamped to 15..280 W";
        tdp_w_ = o.get_double("cpu_tdp_w", std::clamp(10.0 * cpus, 15.0, 280.0));
        idle_fraction_ = o.get_double("idle_fraction", 0.3);
        if (tdp_w_ <= 0 || idle_fraction_ < 0 || idle_fraction_ > 1) {
            throw SensorError(ErrorCategory::Config, "cpu-estimate needs cpu_tdp_w > 0 and 0 <= idle_fraction <= 1",
                              "fix GREENPROBE_CPU_TDP_W / the cpu_tdp_w argument");
        }
        model_name_ = id.model_name;
        unsigned long long busy = 0, total = 0;
        if (!read_times(busy, total)) {
            throw SensorError(ErrorCategory::Io, "cpu-estimate cannot parse " + stat_path_,
                              "check that it is a Linux /proc/stat file");
        }
        busy0_ = busy_ = busy;
        total0_ = total_ = total;
        jiffies_per_s_ = static_cast<double>(cpus) * static_cast<double>(clk_tck());
        ChannelInfo info;
        info.domain = "cpu";
        info.quantity = Quantity::EnergyCounter;
        info.estimated = true;
        info.resolution_j = tdp_w_ / jiffies_per_s_;  // one jiffy of one CPU at the rated power
        info.nominal_update_period_ns = 10000000;  // /proc/stat moves at jiffies (4-10 ms)
        info.max_power_w = 2.0 * tdp_w_;           // the model never passes its rating: a step past twice it is a glitch
        channels_.push_back(info);
    }

    std::string kind() const override { return "cpu-estimate"; }
    const std::vector<ChannelInfo>& channels() const override { return channels_; }
    int64_t min_period_ns() const override { return 10000000; }

    void poll(std::vector<Reading>& out) override {
        unsigned long long busy = 0, total = 0;
        if (!read_times(busy, total)) {
            out[0].status = PollStatus::Retry;
            return;
        }
        // the counts never go back (iowait may, and idle across CPU hotplug): the counter only grows
        busy_ = std::max(busy_, busy);
        total_ = std::max(total_, total);
        const double idle_w = tdp_w_ * idle_fraction_;
        const double b = static_cast<double>(busy_ - busy0_), t = static_cast<double>(total_ - total0_);
        out[0].energy_j_or_power_w = (idle_w * t + (tdp_w_ - idle_w) * std::min(b, t)) / jiffies_per_s_;
        out[0].status = PollStatus::Ok;
    }

    std::map<std::string, std::string> info() const override {
        return {{"estimated", "true"},
                {"cpu_tdp_w", std::to_string(tdp_w_)},
                {"cpu_tdp_source", tdp_source_},
                {"idle_fraction", std::to_string(idle_fraction_)},
                {"cpu_model", model_name_},
                {"method", "idle + (rated - idle) * utilisation, integrated over the jiffies of " + stat_path_}};
    }

  private:
    bool read_times(unsigned long long& busy, unsigned long long& total) {
        char buf[512];
        std::size_t len = 0;
        if (pread_text(fd_.get(), buf, sizeof buf, len) != 0) return false;
        uint64_t v[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        // cpu user nice system idle iowait irq softirq steal (then guest times, inside user and nice):
        // the first line's first numbers, at least four, each by the one integer parser
        if (std::strncmp(buf, "cpu ", 4) != 0) return false;
        const char* p = buf + 3;
        int n = 0;
        for (; n < 8; ++n) {
            while (*p == ' ') ++p;
            const char* end = p;
            while (*end != '\0' && *end != ' ' && *end != '\n') ++end;
            if (end == p || !text::parse_unsigned(std::string(p, end), v[n])) break;
            p = end;
        }
        if (n < 4) return false;
        // busy: user, nice, system, irq, softirq; steal (the hypervisor running another guest) is
        // in the total, not busy: this machine's CPUs did not run then
        total = 0;
        for (auto x : v) total += x;
        busy = v[0] + v[1] + v[2] + v[5] + v[6];
        return true;
    }

    std::string stat_path_;
    Fd fd_;
    static long clk_tck() {
        const long t = sysconf(_SC_CLK_TCK);
        return t > 0 ? t : 100;
    }

    double tdp_w_ = 0, idle_fraction_ = 0, jiffies_per_s_ = 100;
    std::string tdp_source_, model_name_;
    unsigned long long busy0_ = 0, total0_ = 0, busy_ = 0, total_ = 0;
    std::vector<ChannelInfo> channels_;
};

}  // namespace

std::unique_ptr<Sensor> open_cpu_estimate(const Options& options) {
    return std::make_unique<CpuEstimateSensor>(options);
}

}  // namespace greenprobe
