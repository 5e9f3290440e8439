// replay: re-emits recorded channels at their original pace, starting at the first poll.
// Built from arrays (the Python layer reads the samples Parquet file and hands the columns over).
// Each track keeps the recorded ChannelInfo, parent_domain included where the recording had one.
#include "greenprobe/clock.hpp"
#include "greenprobe/registry.hpp"

namespace greenprobe {
namespace {

class ReplaySensor final : public Sensor {
  public:
    ReplaySensor(std::vector<ReplayTrack> tracks, std::string source_kind)
        : tracks_(std::move(tracks)), source_(std::move(source_kind)), cursor_(tracks_.size(), 0) {
        for (const auto& t : tracks_) {
            if (t.offset_ns.empty() || t.offset_ns.size() != t.energy_j_or_power_w.size()) {
                throw SensorError(ErrorCategory::Config, "replay track '" + t.info.domain + "' is empty or ragged",
                                  "record the file again with `greenprobe record`");
            }
            channels_.push_back(t.info);
            // The recorded values were unwrapped and checked when recorded (an excluded step is
            // already left out): no ceiling or wrap to apply again at a replay's own pace.
            channels_.back().max_power_w = 0.0;
            channels_.back().wrap_j = 0.0;
        }
    }

    std::string kind() const override { return "replay"; }
    const std::vector<ChannelInfo>& channels() const override { return channels_; }

    void poll(std::vector<Reading>& out) override {
        const int64_t t = poll_now_ns();
        if (start_ns_ == 0) start_ns_ = t;
        const int64_t elapsed = t - start_ns_;
        for (std::size_t c = 0; c < tracks_.size(); ++c) {
            const auto& tr = tracks_[c];
            std::size_t& i = cursor_[c];
            while (i + 1 < tr.offset_ns.size() && tr.offset_ns[i + 1] <= elapsed) ++i;
            out[c].energy_j_or_power_w = tr.energy_j_or_power_w[i];
            out[c].status = PollStatus::Ok;
        }
    }

    std::map<std::string, std::string> info() const override { return {{"source_sensor", source_}}; }

  private:
    std::vector<ReplayTrack> tracks_;
    std::string source_;
    std::vector<std::size_t> cursor_;
    std::vector<ChannelInfo> channels_;
    int64_t start_ns_ = 0;
};

}  // namespace

std::unique_ptr<Sensor> open_replay(std::vector<ReplayTrack> tracks, std::string source_kind) {
    return std::make_unique<ReplaySensor>(std::move(tracks), std::move(source_kind));
}

}  // namespace greenprobe
