#include "greenprobe/sampler.hpp"

#include <algorithm>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <string>

#include "greenprobe/clock.hpp"
#include "greenprobe/counter.hpp"

namespace greenprobe {

void EdgePlanner::on_change(int64_t edge_ns, int64_t uncertainty_ns) {
    in_window_ = false;
    last_seen_ = edge_ns;
    if (uncertainty_ns > 4 * fine_) {
        // The edge is poorly dated (the poll before it was long ago): do not learn from it; open
        // the next windows earlier. The update lies between the two polls around it: where the learned
        // grid has an update there, it came on time and only the polls were late (a stalled
        // thread, a window closed before it was polled), so the grid's phase stays. Taking the
        // late poll's time as the update's put every later window after its update, each seen
        // late again, until the guard had grown past the lag (three updates of two GPUs out of
        // phase dated to ~50 ms in one CI run).
        extra_guard_ = std::min(period_ / 4, std::max(2 * extra_guard_, 4 * fine_));
        const int64_t after = edge_ns + uncertainty_ns / 2;  // the poll that saw it (the one before: after - uncertainty)
        const int64_t on_grid = period_ > 0 && last_ > 0 && after > last_ ? last_ + (after - last_) / period_ * period_ : 0;
        last_ = on_grid > last_ && on_grid > after - uncertainty_ns && on_grid < after ? on_grid : edge_ns;
        return;
    }
    extra_guard_ /= 2;
    if (last_ != 0 && edge_ns > last_) {
        const int64_t iv = edge_ns - last_;
        // A change after one or more missed windows spans several periods: keep only single periods.
        if (period_ == 0 || iv < period_ + period_ / 2) {
            intervals_[pos_] = iv;
            pos_ = (pos_ + 1) % kHistory;
            if (count_ < kHistory) ++count_;
            int64_t sorted[kHistory];
            std::copy(intervals_, intervals_ + count_, sorted);
            std::nth_element(sorted, sorted + count_ / 2, sorted + count_);
            period_ = sorted[count_ / 2];
        }
    }
    last_ = edge_ns;
    consecutive_misses_ = 0;
}

// Half-width of the window around a predicted update: the observed jitter of the update intervals
// (their spread over the history) and at least three fine polls, or the user's guard.
int64_t EdgePlanner::guard() const {
    if (guard_min_ > 0) return guard_min_ + extra_guard_;
    const auto [lo, hi] = std::minmax_element(intervals_, intervals_ + count_);
    return std::max(3 * fine_, *hi - *lo + fine_) + extra_guard_;
}

int64_t EdgePlanner::next(int64_t regular, int64_t now) {
    if (!learned()) return regular;
    if (in_window_) {
        if (now < window_start_) return std::max(regular, window_start_);  // a poll for another channel
        if (now <= window_end_) return regular;
        in_window_ = false;  // the window closed without a change
        ++misses_total_;
        if (++consecutive_misses_ >= 3) {  // the prediction is off: relearn with fixed polling
            count_ = 0;
            pos_ = 0;
            period_ = 0;
            last_ = 0;
            extra_guard_ = 0;
            consecutive_misses_ = 0;
            return regular;
        }
    }
    const int64_t g = guard();
    int64_t predicted = last_ + period_;
    if (predicted + g < now) predicted += ((now - predicted - g) / period_ + 1) * period_;
    in_window_ = true;
    ++windows_;
    window_start_ = predicted - g;
    window_end_ = predicted + g;
    return std::max(regular, window_start_);
}

namespace {
// A sensor's polling state, as stats() names it.
enum WorkerState : int { kWorkerIdle = 0, kWorkerRunning = 1, kWorkerGone = 2, kWorkerStopped = 3 };
}  // namespace

struct Sampler::Worker {
    std::size_t index = 0;
    std::shared_ptr<Sensor> sensor;
    uint32_t first_channel = 0;
    SpscRing<Sample> ring;
    std::thread thread;

    // Written by the worker thread, read by stats(): atomics, relaxed (counters only).
    std::atomic<uint64_t> polls{0}, late_polls{0}, skipped{0}, drops{0}, pushed{0}, retries{0}, glitches{0};
    std::atomic<int64_t> max_lag_ns{0}, sum_lag_ns{0};
    std::atomic<int> state{kWorkerIdle};  // a WorkerState
    std::size_t channels = 0;
    std::unique_ptr<std::atomic<int64_t>[]> learned_periods;  // one per channel
    std::atomic<uint64_t> edge_windows{0}, edge_misses{0};
    int64_t period_ns = 0;

    mutable std::mutex error_mutex;
    std::string last_error;

    // The poll loop's own state, touched by the worker thread alone (or by poll_at, never both).
    std::vector<Reading> readings;
    std::vector<ChannelState> states;
    // The adaptive schedule: one planner per channel. A channel learning its period keeps the
    // sensor at fine polling while it changed within 8 of its update periods (nominal, at least
    // 8 fine polls): past that it has stopped moving, and another channel sets the schedule.
    std::vector<EdgePlanner> planners;
    std::vector<int64_t> horizon;
    std::size_t alive = 0;  // channels not gone

    Worker(std::size_t capacity, const std::vector<ChannelInfo>& infos, int64_t period, int64_t guard)
        : ring(capacity), channels(infos.size()), learned_periods(new std::atomic<int64_t>[infos.size()]),
          period_ns(period), readings(infos.size()), states(infos.size()),
          planners(infos.size(), EdgePlanner(period, guard)), alive(infos.size()) {
        for (std::size_t c = 0; c < channels; ++c) learned_periods[c].store(0, std::memory_order_relaxed);
        for (const auto& info : infos) horizon.push_back(8 * std::max(info.nominal_update_period_ns, period));
    }

    void push(const Sample& s) {
        if (ring.try_push(s)) {
            pushed.fetch_add(1, std::memory_order_relaxed);
        } else {
            drops.fetch_add(1, std::memory_order_relaxed);
        }
    }
};

StepResult step(ChannelState& s, const Reading& r, const ChannelInfo& info, uint32_t channel,
                const PollWindow& poll, const StepRules& rules) {
    StepResult out;
    if (s.gone) return out;
    const int64_t t = poll.middle();  // the read happened within [t0, t1]
    // When the value was read: the sensor's dating (Reading::t_ns) held inside this poll, so that a
    // channel's samples stay in order whatever a sensor says; else the poll's middle.
    const int64_t ts = r.t_ns != 0 ? std::clamp(r.t_ns, poll.t0, poll.t1) : t;
    if (r.status == PollStatus::Retry) {
        out.event = StepEvent::Retry;
        return out;
    }
    if (r.status == PollStatus::Gone) {
        s.gone = true;
        out.event = StepEvent::Gone;
        out.sample = Sample{t, s.last_t, s.last_recorded, channel, kGone};
        return out;
    }
    uint32_t flags = 0;
    double recorded = r.energy_j_or_power_w + s.offset;
    if (!s.seen) {
        flags = kFirst | kChanged;
        s.seen = true;
        // The value read was set by an update at most about one update period earlier.
        const int64_t nominal = info.nominal_update_period_ns;
        s.since = nominal > 0 ? ts - 2 * nominal : 0;
    } else {
        if (r.energy_j_or_power_w != s.last_value) {
            flags = kChanged;
        } else if (rules.record_all || t - s.last_pushed >= rules.keepalive_ns) {
            flags = kKeepalive;
        }
        // The one check of every energy counter step, whichever sensor read it.
        if (info.quantity == Quantity::EnergyCounter) {
            const StepVerdict verdict = judge_step(r.energy_j_or_power_w - s.last_value, static_cast<double>(ts - s.since) * 1e-9,
                                                   static_cast<double>(ts - s.last_t) * 1e-9, info.max_power_w,
                                                   info.wrap_j, info.resolution_j);
            if (verdict != StepVerdict::Ok) {
                recorded = s.last_recorded;  // the step is left out: the value stays put
                s.offset = recorded - r.energy_j_or_power_w;
                flags |= kGlitch;
                out.glitch = true;
            }
        }
        if (flags & kChanged) {
            s.since = s.last_t;
            out.edge = true;
            out.edge_ns = s.last_poll + (t - s.last_poll) / 2;
            out.edge_uncertainty_ns = t - s.last_poll;
        }
    }
    if (poll.final) flags |= kFinal;
    if (flags != 0) {
        out.event = StepEvent::Recorded;
        out.sample = Sample{ts, s.last_t, recorded, channel, flags};
        s.last_pushed = t;
    }
    s.last_value = r.energy_j_or_power_w;
    s.last_recorded = recorded;
    s.last_poll = t;
    s.last_t = ts;
    return out;
}

namespace {
std::size_t round_up_pow2(std::size_t n) {
    std::size_t p = 2;
    while (p < n) p <<= 1;
    return p;
}
const char* state_name(int s) {
    switch (s) {
        case kWorkerRunning: return "running";
        case kWorkerGone: return "gone";
        case kWorkerStopped: return "stopped";
        default: return "idle";
    }
}
}  // namespace

Sampler::Sampler(std::vector<std::shared_ptr<Sensor>> sensors, SamplerConfig config)
    : sensors_(std::move(sensors)), config_(config) {
    if (config_.period_ns < kMinPeriodNs) {
        throw std::invalid_argument("sampler period must be at least " + std::to_string(kMinPeriodNs / 1000) + " us");
    }
    if (config_.ring_capacity < kMinRingCapacity) {
        throw std::invalid_argument("sampler ring capacity must be at least " + std::to_string(kMinRingCapacity));
    }
    uint32_t next_channel = 0;
    for (std::size_t i = 0; i < sensors_.size(); ++i) {
        auto w = std::make_unique<Worker>(round_up_pow2(config_.ring_capacity), sensors_[i]->channels(),
                                          std::max(config_.period_ns, sensors_[i]->min_period_ns()), config_.guard_ns);
        w->index = i;
        w->sensor = sensors_[i];
        w->first_channel = next_channel;
        for (const auto& info : sensors_[i]->channels()) {
            channels_.push_back(ChannelDesc{next_channel++, i, sensors_[i]->kind(), info});
        }
        workers_.push_back(std::move(w));
    }
}

Sampler::~Sampler() { stop(); }

void Sampler::start() {
    if (stepped_) throw std::logic_error("this sampler is driven by poll_at (a virtual clock): it cannot be started");
    if (running_.exchange(true)) return;
    started_ = true;
    stop_requested_.store(false, std::memory_order_release);
    for (auto& w : workers_) {
        w->state.store(kWorkerRunning, std::memory_order_relaxed);
        Worker* wp = w.get();
        w->thread = std::thread([this, wp] { run(*wp); });
    }
}

void Sampler::stop() {
    if (!running_.load(std::memory_order_acquire)) return;
    stop_requested_.store(true, std::memory_order_release);
    for (auto& w : workers_) {
        if (w->thread.joinable()) w->thread.join();
    }
    running_.store(false, std::memory_order_release);
}

void Sampler::poll_once(Worker& w, const PollWindow& poll) {
    const std::vector<ChannelInfo>& infos = w.sensor->channels();
    const StepRules rules{config_.keepalive_ns, config_.record_all};
    for (std::size_t c = 0; c < w.channels; ++c) {
        if (w.states[c].gone) continue;
        const StepResult r = step(w.states[c], w.readings[c], infos[c], w.first_channel + static_cast<uint32_t>(c),
                                  poll, rules);
        switch (r.event) {
            case StepEvent::Quiet: break;
            case StepEvent::Retry: w.retries.fetch_add(1, std::memory_order_relaxed); break;
            case StepEvent::Gone: {
                --w.alive;
                w.push(r.sample);
                std::lock_guard<std::mutex> lock(w.error_mutex);
                w.last_error = w.sensor->last_error();
                break;
            }
            case StepEvent::Recorded: w.push(r.sample); break;
        }
        if (r.glitch) w.glitches.fetch_add(1, std::memory_order_relaxed);
        if (r.edge && config_.adaptive) w.planners[c].on_change(r.edge_ns, r.edge_uncertainty_ns);
    }
}

// The adaptive schedule: the earliest next poll any active channel asks for; `deadline` (fixed
// polling) while none is.
int64_t Sampler::plan(Worker& w, int64_t deadline, int64_t now) {
    int64_t planned = std::numeric_limits<int64_t>::max();
    uint64_t windows = 0, misses = 0;
    for (std::size_t c = 0; c < w.channels; ++c) {
        EdgePlanner& p = w.planners[c];
        if (!w.states[c].gone && p.active(now, w.horizon[c])) planned = std::min(planned, p.next(deadline, now));
        windows += p.windows();
        misses += p.misses();
        w.learned_periods[c].store(p.learned() ? p.period_ns() : 0, std::memory_order_relaxed);
    }
    w.edge_windows.store(windows, std::memory_order_relaxed);
    w.edge_misses.store(misses, std::memory_order_relaxed);
    return planned != std::numeric_limits<int64_t>::max() ? planned : deadline;
}

void Sampler::run(Worker& w) {
    const int64_t period = w.period_ns;
    int64_t deadline = now_ns();
    bool stopping = false;
    while (w.alive > 0) {
        stopping = stop_requested_.load(std::memory_order_acquire);
        if (!stopping) {
            // a long period is slept in slices, so that stop() is heard within one slice, not a period
            for (int64_t now = now_ns(); now < deadline && !stop_requested_.load(std::memory_order_acquire);
                 now = now_ns()) {
                sleep_until_ns(std::min(deadline, now + kStopSliceNs));
            }
            stopping = stop_requested_.load(std::memory_order_acquire);
        }
        const int64_t t0 = now_ns();
        if (!stopping) {
            const int64_t lag = t0 - deadline;
            if (lag > w.max_lag_ns.load(std::memory_order_relaxed)) w.max_lag_ns.store(lag, std::memory_order_relaxed);
            w.sum_lag_ns.fetch_add(lag, std::memory_order_relaxed);
            if (lag > period) w.late_polls.fetch_add(1, std::memory_order_relaxed);
        }
        for (Reading& r : w.readings) r.t_ns = 0;  // undated unless the sensor dates this poll's reading
        w.sensor->poll(w.readings);
        const int64_t t1 = now_ns();
        w.polls.fetch_add(1, std::memory_order_relaxed);
        poll_once(w, PollWindow{t0, t1, stopping});
        if (stopping) break;

        deadline += period;
        if (config_.adaptive) deadline = plan(w, deadline, now_ns());
        const int64_t now = now_ns();
        if (now - deadline > period) {
            // A long stall (preemption, slow device): skip the missed deadlines, keep the grid.
            const int64_t missed = (now - deadline) / period;
            w.skipped.fetch_add(static_cast<uint64_t>(missed), std::memory_order_relaxed);
            deadline += missed * period;
        }
    }
    w.state.store(w.alive == 0 && !stopping ? kWorkerGone : kWorkerStopped, std::memory_order_relaxed);
}

int64_t Sampler::poll_at(int64_t t_ns, bool final) {
    if (started_) throw std::logic_error("poll_at drives a sampler that is never started; this one was");
    if (finished_) throw std::logic_error("poll_at after the final poll: this sampler has stopped");
    stepped_ = true;
    int64_t next = std::numeric_limits<int64_t>::max();
    for (auto& wp : workers_) {
        Worker& w = *wp;
        if (w.alive == 0) continue;
        for (Reading& r : w.readings) r.t_ns = 0;
        {
            const VirtualPollTime at(t_ns);  // a sensor that reads the clock reads t_ns
            w.sensor->poll(w.readings);
        }
        w.polls.fetch_add(1, std::memory_order_relaxed);
        poll_once(w, PollWindow{t_ns, t_ns, final});
        if (final) {
            w.state.store(kWorkerStopped, std::memory_order_relaxed);
        } else if (w.alive == 0) {
            w.state.store(kWorkerGone, std::memory_order_relaxed);
        } else {
            w.state.store(kWorkerRunning, std::memory_order_relaxed);
            next = std::min(next, config_.adaptive ? plan(w, t_ns + w.period_ns, t_ns) : t_ns + w.period_ns);
        }
    }
    finished_ = final;
    return next == std::numeric_limits<int64_t>::max() ? 0 : next;
}

std::size_t Sampler::drain(std::vector<Sample>& out) {
    std::size_t total = 0;
    for (auto& w : workers_) {
        for (;;) {
            const std::size_t before = out.size();
            out.resize(before + 4096);
            const std::size_t got = w->ring.pop_into(out.data() + before, 4096);
            out.resize(before + got);
            total += got;
            if (got < 4096) break;
        }
    }
    return total;
}

std::vector<SensorStats> Sampler::stats() const {
    std::vector<SensorStats> result;
    for (const auto& w : workers_) {
        SensorStats s;
        s.sensor = w->sensor->kind();
        s.period_ns = w->period_ns;
        s.polls = w->polls.load(std::memory_order_relaxed);
        s.late_polls = w->late_polls.load(std::memory_order_relaxed);
        s.skipped_polls = w->skipped.load(std::memory_order_relaxed);
        s.max_lag_ns = w->max_lag_ns.load(std::memory_order_relaxed);
        s.sum_lag_ns = w->sum_lag_ns.load(std::memory_order_relaxed);
        s.drops = w->drops.load(std::memory_order_relaxed);
        s.pushed = w->pushed.load(std::memory_order_relaxed);
        s.retries = w->retries.load(std::memory_order_relaxed);
        s.glitches = w->glitches.load(std::memory_order_relaxed);
        s.state = state_name(w->state.load(std::memory_order_relaxed));
        for (std::size_t c = 0; c < w->channels; ++c) {
            s.learned_update_periods_ns.push_back(w->learned_periods[c].load(std::memory_order_relaxed));
        }
        s.edge_windows = w->edge_windows.load(std::memory_order_relaxed);
        s.edge_misses = w->edge_misses.load(std::memory_order_relaxed);
        {
            std::lock_guard<std::mutex> lock(w->error_mutex);
            s.last_error = w->last_error;
        }
        result.push_back(std::move(s));
    }
    return result;
}

}  // namespace greenprobe
