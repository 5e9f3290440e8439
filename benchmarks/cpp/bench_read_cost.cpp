// The cost of one counter read through the paths rapl-perf and rapl-msr use: read() of a perf_event
// descriptor (rapl-perf reads 8 bytes per event and package each poll) against pread() of 8 bytes of
// a register file (rapl-msr's pread of /dev/cpu/N/msr, here a plain-file register dump: the syscall
// and VFS part, not the MSR access or an IPI).
//
// Without a power PMU (VMs), the perf read is of a software counter, PERF_COUNT_SW_TASK_CLOCK on this
// thread (user-space only, so perf_event_paranoid 2 allows it): the same read() path through
// perf_read, without the PMU's own read (for RAPL: one rdmsr on the package's CPU, or an IPI to it).
//
//   bench_read_cost [reads=1000000]
#include <fcntl.h>
#include <linux/perf_event.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "greenprobe/clock.hpp"

namespace {

volatile uint64_t sink;  // keeps the reads from being optimised away

// ns per read of `n` reads by fn; -1 when a read fails.
template <typename Fn>
double time_reads(long n, Fn fn) {
    for (long i = 0; i < n / 100; ++i) {  // warm-up
        if (!fn()) return -1;
    }
    const int64_t t0 = greenprobe::now_ns();
    for (long i = 0; i < n; ++i) {
        if (!fn()) return -1;
    }
    return static_cast<double>(greenprobe::now_ns() - t0) / static_cast<double>(n);
}

}  // namespace

int main(int argc, char** argv) {
    const long n = argc > 1 ? std::atol(argv[1]) : 1000000;
    std::string paranoid = "?";
    if (FILE* f = std::fopen("/proc/sys/kernel/perf_event_paranoid", "r")) {
        char buf[16] = {};
        if (std::fgets(buf, sizeof buf, f)) paranoid = std::string(buf, std::strcspn(buf, "\n"));
        std::fclose(f);
    }
    std::printf("reads per path: %ld; kernel.perf_event_paranoid = %s\n", n, paranoid.c_str());

    perf_event_attr attr;
    std::memset(&attr, 0, sizeof attr);
    attr.size = sizeof attr;
    attr.type = PERF_TYPE_SOFTWARE;
    attr.config = PERF_COUNT_SW_TASK_CLOCK;
    attr.exclude_kernel = 1;
    attr.exclude_hv = 1;
    const long pfd = ::syscall(SYS_perf_event_open, &attr, 0, -1, -1, PERF_FLAG_FD_CLOEXEC);
    if (pfd < 0) {
        std::printf("perf read(): perf_event_open(task-clock, this thread) failed: %s\n", std::strerror(errno));
    } else {
        const int fd = static_cast<int>(pfd);
        const double ns = time_reads(n, [fd] {
            uint64_t v = 0;
            const bool ok = ::read(fd, &v, sizeof v) == static_cast<ssize_t>(sizeof v);
            sink = v;
            return ok;
        });
        std::printf("perf read() of 8 bytes (software task-clock): %.1f ns per read\n", ns);
        ::close(fd);
    }

    char path[] = "/tmp/greenprobe-bench-regs-XXXXXX";
    const int rfd = ::mkstemp(path);
    if (rfd < 0) {
        std::printf("pread: mkstemp failed: %s\n", std::strerror(errno));
        return 1;
    }
    ::unlink(path);
    const uint64_t reg = 0x123456789ull;
    if (::pwrite(rfd, &reg, sizeof reg, 0) != static_cast<ssize_t>(sizeof reg)) return 1;
    const double ns = time_reads(n, [rfd] {
        uint64_t v = 0;
        const bool ok = ::pread(rfd, &v, sizeof v, 0) == static_cast<ssize_t>(sizeof v);
        sink = v;
        return ok;
    });
    std::printf("pread() of 8 bytes of a register-dump file: %.1f ns per read\n", ns);
    ::close(rfd);
    return 0;
}
