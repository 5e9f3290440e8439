// synthetic: waveforms with closed-form integrals, for tests, demos and benchmarks.
//
// Options:
//   waveform=constant|sine|square, base_w, amp_w, freq_hz, duty   (see waveform.hpp)
//   quantity=energy|power      energy: cumulative counter; power: mean over the last update period
//   update_us=1000             the counter only moves at multiples of this period (0: every poll)
//   resolution_j=0             counter quantisation step in joules (0: none)
//   domains=synthetic0         comma-separated; domain i carries (i+1) x the waveform
//   t0_ns=<open time>          origin of the waveform on CLOCK_MONOTONIC
#include <cmath>
#include <sstream>

#include "greenprobe/clock.hpp"
#include "greenprobe/registry.hpp"
#include "waveform.hpp"

namespace greenprobe {
namespace {

class SyntheticSensor final : public Sensor {
  public:
    explicit SyntheticSensor(const Options& o) : wave_(Waveform::from_options(o, "")) {
        const std::string quantity = o.get("quantity", "energy");
        if (quantity != "energy" && quantity != "power") {
            throw SensorError(ErrorCategory::Config, "synthetic quantity must be energy or power, not '" + quantity + "'",
                              "use quantity=energy or quantity=power");
        }
        power_ = quantity == "power";
        update_ns_ = o.get_int("update_us", 1000) * 1000;
        resolution_j_ = o.get_double("resolution_j", 0.0);
        t0_ns_ = o.get_int("t0_ns", poll_now_ns());
        if (update_ns_ < 0 || resolution_j_ < 0) {
            throw SensorError(ErrorCategory::Config, "update_us and resolution_j must be >= 0", "fix the option");
        }
        if (power_ && update_ns_ == 0) {
            throw SensorError(ErrorCategory::Config, "a synthetic power channel needs update_us > 0",
                              "set update_us to the averaging period");
        }
        std::stringstream ss(o.get("domains", "synthetic0"));
        std::string d;
        while (std::getline(ss, d, ',')) {
            ChannelInfo info;
            info.domain = d;
            info.quantity = power_ ? Quantity::Power : Quantity::EnergyCounter;
            if (!power_) info.resolution_j = resolution_j_;
            info.nominal_update_period_ns = update_ns_;
            // Twice the waveform's peak: the counter never wraps, and a step above it is a bug.
            const double peak_w = (std::fabs(wave_.base_w) + std::fabs(wave_.amp_w)) * static_cast<double>(channels_.size() + 1);
            info.max_power_w = 2.0 * peak_w;
            channels_.push_back(info);
        }
        if (channels_.empty()) {
            throw SensorError(ErrorCategory::Config, "synthetic sensor needs at least one domain", "set domains=a,b");
        }
    }

    std::string kind() const override { return "synthetic"; }
    const std::vector<ChannelInfo>& channels() const override { return channels_; }

    void poll(std::vector<Reading>& out) override {
        const int64_t t = poll_now_ns();
        int64_t tick_ns = t - t0_ns_;
        if (update_ns_ > 0) {
            tick_ns = (tick_ns >= 0 ? tick_ns / update_ns_ : (tick_ns - update_ns_ + 1) / update_ns_) * update_ns_;
        }
        const double tau = static_cast<double>(tick_ns) * 1e-9;
        double value;
        if (power_) {
            const double period = static_cast<double>(update_ns_) * 1e-9;
            value = (wave_.energy_j(tau) - wave_.energy_j(tau - period)) / period;
        } else {
            value = wave_.energy_j(tau);
            if (resolution_j_ > 0) value = std::floor(value / resolution_j_) * resolution_j_;
        }
        for (std::size_t i = 0; i < channels_.size(); ++i) {
            out[i].energy_j_or_power_w = value * static_cast<double>(i + 1);
            out[i].status = PollStatus::Ok;
        }
    }

    std::map<std::string, std::string> info() const override {
        return {{"t0_ns", std::to_string(t0_ns_)}, {"update_ns", std::to_string(update_ns_)}};
    }

  private:
    Waveform wave_;
    bool power_ = false;
    int64_t update_ns_ = 0;
    double resolution_j_ = 0.0;
    int64_t t0_ns_ = 0;
    std::vector<ChannelInfo> channels_;
};

}  // namespace

std::unique_ptr<Sensor> open_synthetic(const Options& options) { return std::make_unique<SyntheticSensor>(options); }

}  // namespace greenprobe
