// greenprobe-perf-helper: opens the RAPL perf events for a member of one group and hands the
// descriptors over (perf_handoff.hpp says how, and why this is a separate program). It does nothing
// else: no arguments, no paths from a privileged run's environment, one request, one reply.
//
// Started by the rapl-perf sensor with its socket as descriptor 3. By hand, to see what it says:
//   greenprobe-perf-helper            (prints how it is used and exits 2)
#include <grp.h>
#include <sys/auxv.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <map>
#include <string>
#include <vector>

#include "greenprobe/errors.hpp"
#include "perf_handoff.hpp"
#include "rapl_perf.hpp"

using namespace greenprobe;
namespace ph = greenprobe::perf_handoff;

namespace {

int refuse(int sock, const std::string& category, const std::string& message, const std::string& fix) {
    ph::send_message(sock, ph::format_error(category, message, fix), {});
    return 1;
}

}  // namespace

int main() {
    const int sock = ph::kHelperSocketFd;
    int type = 0;
    socklen_t len = sizeof type;
    if (::getsockopt(sock, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_SEQPACKET) {
        std::fprintf(stderr,
                     "greenprobe-perf-helper hands RAPL perf_event descriptors to greenprobe's rapl-perf sensor, which "
                     "starts it; it is not run by hand.\nSet it up once with `sudo greenprobe setup-perf --apply`.\n");
        return 2;
    }
    // Who may: root, or a member of the group that owns this program (setup-perf makes it 0750 root:GROUP).
    struct stat self {};
    if (::stat("/proc/self/exe", &self) != 0) {
        return refuse(sock, "not-found", "greenprobe-perf-helper cannot find its own file (/proc/self/exe), so not its group",
                      "mount /proc (in a container: the runtime's default /proc)");
    }
    const unsigned gid = static_cast<unsigned>(self.st_gid);
    const std::string why = ph::check_peer(sock, gid);
    if (!why.empty()) {
        const group* g = gid ? ::getgrgid(gid) : nullptr;
        const std::string name = g ? g->gr_name : "greenprobe";
        const bool membership = why.find("member") != std::string::npos || why.find("group root") != std::string::npos;
        return refuse(sock, "permission", "greenprobe-perf-helper refuses: " + why,
                      membership ? "an administrator adds the user to group " + name +
                                       " (`sudo greenprobe setup-perf --apply --user USER --group " + name +
                                       "`, then log in again)"
                                 : "the helper serves only the process that starts it, as the same user: let greenprobe's "
                                   "rapl-perf sensor start it");
    }
    std::string request;
    std::vector<int> fds;
    if (!ph::recv_message(sock, request, fds, 5000) || !fds.empty() || !ph::parse_request(request)) {
        for (int fd : fds) ::close(fd);
        return refuse(sock, "config", "greenprobe-perf-helper got no valid request",
                      "the helper and the greenprobe package must be the same version: reinstall greenprobe");
    }
    // Paths from the environment only where the run grants nothing (no capability, no setuid: the
    // loader's secure mode is off), which is how the tests point it at stand-in trees.
    std::map<std::string, std::string> options;
    if (::getauxval(AT_SECURE) == 0) {
        for (const auto& [key, var] : {std::pair<const char*, const char*>{"perf_event_root", "GREENPROBE_PERF_EVENT_ROOT"},
                                       {"sysfs_cpu_root", "GREENPROBE_SYSFS_CPU_ROOT"},
                                       {"proc_root", "GREENPROBE_PROC_ROOT"}}) {
            const char* v = std::getenv(var);
            if (v && *v) options[key] = v;
        }
    }
    std::vector<ph::Event> events;
    try {
        events = open_rapl_perf_events(Options(options));
    } catch (const SensorError& e) {
        return refuse(sock, category_name(e.category()), e.what(), e.fix());
    } catch (const std::exception& e) {
        return refuse(sock, "io", std::string("greenprobe-perf-helper failed: ") + e.what(),
                      "report this: it is a bug in the helper");
    }
    std::vector<int> out;
    for (const auto& e : events) out.push_back(e.fd);
    const bool sent = ph::send_message(sock, ph::format_ok(events), out);
    for (int fd : out) ::close(fd);
    return sent ? 0 : 1;
}
