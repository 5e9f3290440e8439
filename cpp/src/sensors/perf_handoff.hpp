// Handing RAPL perf_event descriptors from greenprobe-perf-helper to an unprivileged process.
//
// A capability attaches to an executable, not to a Python module: an administrator grants
// cap_perfmon to one small program (`greenprobe setup-perf`), greenprobe-perf-helper, executable
// by one group. The rapl-perf sensor, when it may not open the events itself, runs the helper with
// one end of a socketpair(AF_UNIX, SOCK_SEQPACKET) as the helper's descriptor 3. The helper:
//   1. checks its peer (SO_PEERCRED): the process that started it (its parent), of the user that
//      runs it, and that user root or a member of the helper file's group;
//   2. reads one request, the line `greenprobe-perf-helper 1`, and nothing else;
//   3. opens the power PMU's RAPL events, one CPU per package (the same code as the sensor), and
//      sends them in one message: a text reply and the descriptors (SCM_RIGHTS), then exits.
// The process then reads the counters at full rate with no privilege and no daemon. The helper
// takes no paths from a privileged run's environment (AT_SECURE), opens only the power PMU's
// events, and the kernel lets a descriptor of a system-wide energy counter do nothing but count.
//
// Reply (text, one message):
//   ok <n>\n  then n lines  event <name> package <P> cpu <C> scale <S>\n  in descriptor order
//   error <category> <message>\t<fix>\n      (category: permission, not-found, unsupported, ...)
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "greenprobe/errors.hpp"

namespace greenprobe::perf_handoff {

constexpr const char* kRequest = "greenprobe-perf-helper 1\n";
constexpr int kHelperSocketFd = 3;
constexpr std::size_t kMaxMessage = 16384;
constexpr std::size_t kMaxFds = 250;  // SCM_MAX_FD is 253

struct Event {
    std::string name;  // "energy-pkg", ...
    int package = -1;
    int cpu = -1;
    double scale = 0.0;  // joules per count
    int fd = -1;
};

struct Reply {
    bool ok = false;
    std::vector<Event> events;        // ok: one per descriptor, fds filled in by the receiver
    std::string category, message, fix;  // error
};

// Pure: exact match of the one request there is.
bool parse_request(const std::string& message);
std::string format_ok(const std::vector<Event>& events);
std::string format_error(const std::string& category, const std::string& message, const std::string& fix);
// Pure: nullopt for anything malformed (a count that disagrees with the descriptors received, a
// line out of place, a number out of range). Never trusts the text beyond what it checks.
std::optional<Reply> parse_reply(const std::string& text, std::size_t fds_received);

// One message with descriptors on a SOCK_SEQPACKET socket. recv waits at most timeout_ms; received
// descriptors are close-on-exec. Both return false on any failure (errno set).
bool send_message(int sock, const std::string& text, const std::vector<int>& fds);
bool recv_message(int sock, std::string& text, std::vector<int>& fds, int timeout_ms);

// Helper side: empty when the peer of `sock` may have the descriptors, else why not.
// allowed_gid: the group whose members may (the helper file's group).
std::string check_peer(int sock, unsigned allowed_gid);

// The helper ran and refused, with its own category, message and fix (the other failures of
// request_from_helper are plain SensorErrors: the helper could not be run or talked to).
class HelperRefused : public SensorError {
  public:
    using SensorError::SensorError;
};

// Client side: runs the helper and returns its events with their descriptors (the caller owns
// them). Throws SensorError: the helper missing or not executable, refusing (its category and
// fix), crashing or answering nonsense.
std::vector<Event> request_from_helper(const std::string& helper_path, int timeout_ms = 5000);

}  // namespace greenprobe::perf_handoff
