// Lock-free single-producer single-consumer ring.
// The producer (a sensor thread) only ever calls try_push: a full ring returns false and the caller
// counts a drop; nothing blocks. Head and tail live on their own cache lines, each side caches the
// other's index to avoid touching the shared line on every operation, and only acquire/release
// ordering is used (the layout follows the well-known rigtorp/SPSCQueue design).
#pragma once

#include <atomic>
#include <cstddef>
#include <memory>
#include <stdexcept>
#include <type_traits>

namespace greenprobe {

inline constexpr std::size_t kCacheLine = 64;

template <typename T>
class SpscRing {
    static_assert(std::is_trivially_copyable_v<T>, "SpscRing holds trivially copyable records");

  public:
    explicit SpscRing(std::size_t capacity_pow2) : capacity_(capacity_pow2), mask_(capacity_pow2 - 1) {
        if (capacity_pow2 < 2 || (capacity_pow2 & (capacity_pow2 - 1)) != 0) {
            throw std::invalid_argument("SpscRing capacity must be a power of two >= 2");
        }
        slots_ = std::make_unique<T[]>(capacity_pow2);
    }

    SpscRing(const SpscRing&) = delete;
    SpscRing& operator=(const SpscRing&) = delete;

    // Producer side.
    bool try_push(const T& value) noexcept {
        const std::size_t head = head_.load(std::memory_order_relaxed);
        if (head - tail_cache_ == capacity_) {
            tail_cache_ = tail_.load(std::memory_order_acquire);
            if (head - tail_cache_ == capacity_) {
                return false;
            }
        }
        slots_[head & mask_] = value;
        head_.store(head + 1, std::memory_order_release);
        return true;
    }

    // Consumer side: pops up to max_items into out, returns how many.
    std::size_t pop_into(T* out, std::size_t max_items) noexcept {
        const std::size_t tail = tail_.load(std::memory_order_relaxed);
        if (head_cache_ - tail < max_items) {
            head_cache_ = head_.load(std::memory_order_acquire);  // refresh only when the cache is short
        }
        std::size_t available = head_cache_ - tail;
        if (available > max_items) {
            available = max_items;
        }
        for (std::size_t i = 0; i < available; ++i) {
            out[i] = slots_[(tail + i) & mask_];
        }
        tail_.store(tail + available, std::memory_order_release);
        return available;
    }

    bool try_pop(T& out) noexcept { return pop_into(&out, 1) == 1; }

    std::size_t capacity() const noexcept { return capacity_; }

    // Approximate when called concurrently; exact when both sides are quiet.
    std::size_t size() const noexcept {
        return head_.load(std::memory_order_acquire) - tail_.load(std::memory_order_acquire);
    }

  private:
    const std::size_t capacity_;
    const std::size_t mask_;
    std::unique_ptr<T[]> slots_;

    alignas(kCacheLine) std::atomic<std::size_t> head_{0};  // written by the producer
    std::size_t tail_cache_ = 0;                            // producer's copy of tail_
    alignas(kCacheLine) std::atomic<std::size_t> tail_{0};  // written by the consumer
    std::size_t head_cache_ = 0;                            // consumer's copy of head_
    char pad_[kCacheLine - sizeof(std::size_t)]{};
};

}  // namespace greenprobe
