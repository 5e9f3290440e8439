// amd-gpu: AMD GPUs through AMD SMI (libamd_smi.so, loaded at run time: amd_smi_api.hpp). Per GPU
// one channel, domain amdgpu<N> (N: AMD SMI's index among its GPUs), with the GPU's UUID and PCI
// address:
//
//   the energy accumulator (amdsmi_get_energy_count) x its resolution (µJ, about 15.3 on current
//   boards) as an energy counter. The SMU updates it about every millisecond; it is 64 bits wide
//   and never wraps in practice (wrap_j 0).
//
//   The counter is checked once at open: two reads amd_counter_check_ms apart (50 ms by default)
//   against the power reading over the same time. Some boards' counters stand still or run
//   backwards; a counter that does, or whose rate is more than 4 times off the power reading (a
//   wrong resolution), is replaced by the power reading (amdsmi_get_power_info, whole watts) as a
//   power channel, and info() and the channel's note say so and why. A GPU without a counter gets
//   the power reading too.
//
// Which GPUs: amd_smi_select.hpp (the gpus option, else ROCR_VISIBLE_DEVICES / HIP_VISIBLE_DEVICES,
// else every GPU). A GPU that disappears while sampling goes Gone; the others go on.
//
// Options:
//   amd_smi_library=libamd_smi.so   path or soname (also tried: $ROCM_PATH/lib, /opt/rocm/lib)
//   gpus=all|0,2|<uuid>,...         overrides the environment
//   amd_counter_check_ms=50         the open check's delay (0: no check)
#include <time.h>

#include <cmath>
#include <cstdio>
#include <optional>

#include "amd_smi_api.hpp"
#include "amd_smi_select.hpp"
#include "greenprobe/clock.hpp"
#include "greenprobe/registry.hpp"

namespace greenprobe {
namespace {

// The most one GPU can draw: MI300X is rated 750 W, MI355X 1400 W; 1500 W leaves room.
constexpr double kAmdGpuMaxPowerW = 1500.0;
constexpr int64_t kMs = 1000000;

std::string fmt(const char* f, double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, f, v);
    return buf;
}

class AmdGpuSensor final : public Sensor {
  public:
    explicit AmdGpuSensor(const Options& o) : api_(amdsmi::Api::load(o.get("amd_smi_library", ""))) {
        try {
            open_devices(o);
        } catch (...) {
            api_.shut_down_and_unload();
            throw;
        }
    }
    ~AmdGpuSensor() override { api_.shut_down_and_unload(); }
    AmdGpuSensor(const AmdGpuSensor&) = delete;
    AmdGpuSensor& operator=(const AmdGpuSensor&) = delete;

    std::string kind() const override { return "amd-gpu"; }
    const std::vector<ChannelInfo>& channels() const override { return channels_; }
    // The SMU refreshes its metrics about every millisecond; polling a few times faster dates each
    // update to a fraction of it (what short intervals need), and a read costs tens of µs.
    int64_t min_period_ns() const override { return kMs / 10; }

    void poll(std::vector<Reading>& out) override {
        for (auto& g : gpus_) {
            Reading& r = out[static_cast<std::size_t>(g.channel)];
            if (g.lost) {
                r.status = PollStatus::Gone;
                continue;
            }
            if (g.counter) {
                uint64_t acc = 0, ts = 0;
                float res = 0.0f;
                const amdsmi::Status s = api_.GetEnergyCount(g.handle, &acc, &res, &ts);
                store(r, g, s, static_cast<double>(acc) * g.joules_per_count, "amdsmi_get_energy_count");
            } else {
                amdsmi::PowerReading p;
                const amdsmi::Status s = api_.read_power(g.handle, p);
                store(r, g, s, p.watts, "amdsmi_get_power_info");
            }
        }
    }

    std::map<std::string, std::string> info() const override {
        std::map<std::string, std::string> m = {
            {"amd_smi_library", api_.path},
            {"amd_smi_version", api_.version.known ? api_.version.text : "unknown (amdsmi_get_lib_version missing or unreadable)"},
            {"power_info_layout", amdsmi::layout_name(amdsmi::power_layout(api_.version))},
            {"counter_check", check_ms_ > 0 ? fmt("%g ms between two reads, against the power reading", check_ms_)
                                            : "not made (amd_counter_check_ms=0)"},
        };
        std::string visible;
        for (const auto& g : gpus_) {
            const std::string gpu = "amdgpu" + std::to_string(g.index);
            m[gpu + "_uuid"] = g.uuid;
            m[gpu + "_pci_bus_id"] = g.bus_id;
            m[gpu + "_energy_source"] = g.source;
            visible += (visible.empty() ? "" : " ") + gpu;
        }
        for (const auto& [gpu, why] : skipped_) m[gpu + "_skipped"] = why;
        m["visible_devices"] =
            visible + (selection_.source == "default" ? " (every GPU AMD SMI sees)" : " from " + selection_.given);
        m["visible_devices_source"] = selection_.source;
        if (!selection_.mapping.empty()) m["visible_devices_mapping"] = selection_.mapping;
        if (!selection_.note.empty()) m["visible_devices_note"] = selection_.note;
        return m;
    }
    std::string last_error() const override { return last_error_; }

  private:
    struct Gpu {
        unsigned index = 0;
        amdsmi::ProcessorHandle handle = nullptr;
        std::string uuid, bus_id, source;
        bool counter = false;  // else the power reading
        bool lost = false;
        double joules_per_count = 0.0;
        int channel = -1;
    };

    // One read of a GPU's counter and power, for the open check.
    struct Probe {
        amdsmi::Status energy_status = amdsmi::kNotSupported;
        uint64_t count = 0;
        float resolution_uj = 0.0f;
        amdsmi::Status power_status = amdsmi::kNotSupported;
        amdsmi::PowerReading power;
        int64_t t_ns = 0;
    };

    Probe probe(amdsmi::ProcessorHandle h) const {
        Probe p;
        if (api_.GetEnergyCount) {
            uint64_t ts = 0;
            p.energy_status = api_.GetEnergyCount(h, &p.count, &p.resolution_uj, &ts);
        }
        p.t_ns = now_ns();
        p.power_status = api_.read_power(h, p.power);
        return p;
    }

    void store(Reading& r, Gpu& g, amdsmi::Status s, double value, const char* call) {
        if (s == amdsmi::kSuccess) {
            r.energy_j_or_power_w = value;
            r.status = PollStatus::Ok;
            return;
        }
        const amdsmi::StatusClass sc = amdsmi::classify(s);
        last_error_ = "amdgpu" + std::to_string(g.index) + ": " + call + ": " + api_.error_string(s);
        if (sc.lost) {
            g.lost = true;
            last_error_ += " (the GPU is gone)";
        }
        r.status = sc.transient && !sc.lost ? PollStatus::Retry : PollStatus::Gone;
    }

    // Decides a GPU's source from two reads `first` and `second` check_ms_ apart; sets g.counter,
    // g.source and returns the note of a fallback (empty when the counter is used as it is).
    std::string judge(Gpu& g, const Probe& first, const Probe& second) const {
        const bool have_power = first.power_status == amdsmi::kSuccess && second.power_status == amdsmi::kSuccess;
        const double power_w = have_power ? 0.5 * (first.power.watts + second.power.watts) : 0.0;
        const std::string power_text =
            have_power ? "the power reading (" + std::string(second.power.member) + ") said " + fmt("%.0f W", power_w) : "";
        if (first.energy_status != amdsmi::kSuccess || second.energy_status != amdsmi::kSuccess) {
            const amdsmi::Status s = first.energy_status != amdsmi::kSuccess ? first.energy_status : second.energy_status;
            g.counter = false;
            return api_.GetEnergyCount ? "no energy counter (amdsmi_get_energy_count: " + api_.error_string(s) + ")"
                                       : "no energy counter (this AMD SMI lacks amdsmi_get_energy_count)";
        }
        const double jpc = static_cast<double>(second.resolution_uj) * 1e-6;
        g.joules_per_count = jpc;
        if (!(jpc > 0.0) || !std::isfinite(jpc)) {
            g.counter = false;
            return "the energy counter's resolution is " + fmt("%g µJ", static_cast<double>(second.resolution_uj)) +
                   ", which cannot be right";
        }
        const std::string counter_text = "energy counter (" + fmt("%.4g µJ steps", jpc * 1e6) + ")";
        g.counter = true;
        if (check_ms_ <= 0) {
            g.source = counter_text + ", not checked (amd_counter_check_ms=0)";
            return {};
        }
        const double dt_s = static_cast<double>(second.t_ns - first.t_ns) * 1e-9;
        const double e0 = static_cast<double>(first.count) * jpc, e1 = static_cast<double>(second.count) * jpc;
        const std::string span = fmt("%.0f ms", dt_s * 1e3);
        if (second.count < first.count) {
            g.counter = false;
            return "the energy counter ran backwards at the open check (" + fmt("%.6f J", e0) + " then " +
                   fmt("%.6f J", e1) + " " + span + " later)";
        }
        if (second.count == first.count) {
            if (have_power && power_w >= 1.0) {
                g.counter = false;
                return "the energy counter stood still for " + span + " at the open check while " + power_text;
            }
            g.source = counter_text + ": it did not move in the " + span + " check and there is no power reading to "
                       "tell an idle board from a frozen counter";
            return {};
        }
        const double rate_w = (e1 - e0) / dt_s;
        if (rate_w > kAmdGpuMaxPowerW) {
            if (have_power) {
                g.counter = false;
                return "the energy counter rose at " + fmt("%.0f W", rate_w) + " at the open check, above any GPU's " +
                       fmt("%.0f W", kAmdGpuMaxPowerW) + ", while " + power_text;
            }
        } else if (have_power && (rate_w < power_w / 4.0 - 10.0 || rate_w > power_w * 4.0 + 10.0)) {
            g.counter = false;
            return "the energy counter rose at " + fmt("%.1f W", rate_w) + " over " + span + " at the open check while " +
                   power_text + ": more than 4 times apart (a wrong counter resolution?)";
        }
        g.source = counter_text + ": " + fmt("%.1f W", rate_w) + " over the " + span + " check" +
                   (have_power ? ", " + power_text : ", no power reading to compare");
        return {};
    }

    void open_devices(const Options& o) {
        check_ms_ = o.get_double("amd_counter_check_ms", 50.0);
        if (!(check_ms_ >= 0.0) || check_ms_ > 10000.0) {
            throw SensorError(ErrorCategory::Config, "option amd_counter_check_ms=" + fmt("%g", check_ms_) + " is out of range",
                              "give the open check's delay in milliseconds, 0 to 10000 (default 50; 0 skips the check)");
        }
        const std::vector<amdsmi::KnownGpu> known = amdsmi::enumerate_gpus(api_);
        selection_ = amdsmi::select_gpus(known, o.has("gpus") ? std::optional<std::string>(o.get("gpus", "")) : std::nullopt,
                                         amdsmi::VisibleEnv::from_process());
        std::vector<Gpu> chosen;
        std::vector<Probe> first;
        for (unsigned i : selection_.gpus) {
            Gpu g;
            g.index = i;
            g.handle = known[i].handle;
            g.uuid = known[i].uuid;
            g.bus_id = known[i].bus_id;
            chosen.push_back(g);
            first.push_back(probe(g.handle));
        }
        if (check_ms_ > 0) {
            const auto ns = static_cast<int64_t>(check_ms_ * 1e6);
            timespec ts{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
            while (nanosleep(&ts, &ts) != 0) {
            }
        }
        std::string reasons;
        for (std::size_t k = 0; k < chosen.size(); ++k) {
            Gpu& g = chosen[k];
            const Probe second = probe(g.handle);
            const std::string note = judge(g, first[k], second);
            ChannelInfo c;
            c.domain = "amdgpu" + std::to_string(g.index);
            c.device_uuid = g.uuid;
            c.device_bus_id = g.bus_id;
            c.max_power_w = kAmdGpuMaxPowerW;
            c.wrap_j = 0.0;  // a 64-bit accumulator: centuries at any GPU's power
            if (g.counter) {
                c.quantity = Quantity::EnergyCounter;
                c.resolution_j = g.joules_per_count;
                c.nominal_update_period_ns = 1 * kMs;
            } else {
                const bool have_power = second.power_status == amdsmi::kSuccess;
                if (!have_power) {
                    const std::string why = note + "; and no power reading (" +
                                            (amdsmi::power_layout(api_.version) == amdsmi::PowerLayout::Unknown
                                                 ? std::string("the AMD SMI version is unknown, so the layout of "
                                                               "amdsmi_power_info_t cannot be chosen")
                                                 : "amdsmi_get_power_info: " + api_.error_string(second.power_status)) +
                                            ")";
                    skipped_.emplace_back(c.domain, why);
                    reasons += " " + c.domain + ": " + why + ";";
                    continue;
                }
                c.quantity = Quantity::Power;
                c.resolution_w = 1.0;  // whole watts
                c.nominal_update_period_ns = 1 * kMs;
                // current_socket_power / socket_power (MI300 and newer) is the last millisecond or so;
                // average_socket_power (Navi, MI200 and older) a smoothed value the SMU does not document.
                const bool average = std::string(second.power.member) == "average_socket_power";
                c.averaging_window_ns = 1 * kMs;
                c.averaging_window_min_ns = 1 * kMs;
                c.averaging_window_max_ns = average ? 1000 * kMs : 20 * kMs;
                g.source = "power reading (" + std::string(second.power.member) + ", whole watts) instead of the " +
                           "energy counter: " + note;
                c.note = g.source;
            }
            g.channel = static_cast<int>(channels_.size());
            channels_.push_back(c);
            gpus_.push_back(g);
        }
        if (channels_.empty()) {
            throw SensorError(ErrorCategory::Unsupported, "no AMD GPU offers energy or power through AMD SMI:" + reasons,
                              "energy counters need an MI200/MI300 or RDNA board and a recent amdgpu driver; update ROCm "
                              "(6.0 or newer) so that AMD SMI can read the board's power");
        }
    }

    amdsmi::Api api_;
    std::vector<Gpu> gpus_;
    std::vector<ChannelInfo> channels_;
    std::vector<std::pair<std::string, std::string>> skipped_;
    amdsmi::Selection selection_;
    double check_ms_ = 50.0;
    std::string last_error_;
};

}  // namespace

std::unique_ptr<Sensor> open_amd_gpu(const Options& options) { return std::make_unique<AmdGpuSensor>(options); }

}  // namespace greenprobe
