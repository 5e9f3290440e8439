// The one clock of greenprobe: CLOCK_MONOTONIC in nanoseconds.
// Samples, marks and deadlines all use it; wall time appears only as an anchor pair in metadata.
#pragma once

#include <cstdint>
#include <ctime>

namespace greenprobe {

inline int64_t now_ns() noexcept {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<int64_t>(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
}

namespace detail {
inline thread_local int64_t poll_now_ns = 0;  // set by VirtualPollTime: 0, the real clock
}

// The time a sensor that computes its reading from the clock (synthetic, replay) reads it at: the
// real clock, or within a VirtualPollTime on this thread (Sampler::poll_at) the virtual instant.
// Marks and the sampler's own schedule use now_ns(), never this.
inline int64_t poll_now_ns() noexcept {
    const int64_t v = detail::poll_now_ns;
    return v != 0 ? v : now_ns();
}

// While one lives, poll_now_ns() on this thread answers t_ns.
class VirtualPollTime {
  public:
    explicit VirtualPollTime(int64_t t_ns) noexcept : prev_(detail::poll_now_ns) { detail::poll_now_ns = t_ns; }
    ~VirtualPollTime() { detail::poll_now_ns = prev_; }
    VirtualPollTime(const VirtualPollTime&) = delete;
    VirtualPollTime& operator=(const VirtualPollTime&) = delete;

  private:
    int64_t prev_;
};

inline int64_t wall_ns() noexcept {
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<int64_t>(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
}

// Sleeps until the absolute CLOCK_MONOTONIC deadline (restarts after signals).
inline void sleep_until_ns(int64_t deadline_ns) noexcept {
    timespec ts{};
    ts.tv_sec = static_cast<time_t>(deadline_ns / 1000000000LL);
    ts.tv_nsec = static_cast<long>(deadline_ns % 1000000000LL);
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) != 0) {
    }
}

}  // namespace greenprobe
