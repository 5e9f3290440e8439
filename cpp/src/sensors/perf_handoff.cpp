#include "perf_handoff.hpp"

#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <sstream>

#include "greenprobe/errors.hpp"
#include "text.hpp"

extern char** environ;

namespace greenprobe::perf_handoff {

namespace {

std::optional<ErrorCategory> category_of(const std::string& name) {
    for (auto c : {ErrorCategory::Permission, ErrorCategory::LibraryMissing, ErrorCategory::Unsupported,
                   ErrorCategory::NotFound, ErrorCategory::DeviceLost, ErrorCategory::Io, ErrorCategory::Config}) {
        if (name == category_name(c)) return c;
    }
    return std::nullopt;
}

// Lines without their '\n'; false if the text does not end in one or holds a NUL.
bool split_lines(const std::string& text, std::vector<std::string>& lines) {
    if (text.empty() || text.back() != '\n' || text.find('\0') != std::string::npos) return false;
    std::size_t start = 0;
    while (start < text.size()) {
        const std::size_t end = text.find('\n', start);
        lines.push_back(text.substr(start, end - start));
        start = end + 1;
    }
    return true;
}

// A number of the helper's reply: digits only (no sign, no blanks: the reply is exact), read by the
// one integer parser, within [lo, hi].
bool parse_int(const std::string& s, int lo, int hi, int& out) {
    if (s.empty() || s.size() > 9 || s.find_first_not_of("0123456789") != std::string::npos) return false;
    int v = 0;
    if (!text::parse_integer(s, v) || v < lo || v > hi) return false;
    out = v;
    return true;
}

bool is_event_name(const std::string& s) {
    if (s.size() < 8 || s.size() > 64 || s.rfind("energy-", 0) != 0) return false;
    for (char c : s) {
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_')) return false;
    }
    return true;
}

}  // namespace

bool parse_request(const std::string& message) { return message == kRequest; }

std::string format_ok(const std::vector<Event>& events) {
    std::ostringstream o;
    o.precision(17);
    o << "ok " << events.size() << "\n";
    for (const auto& e : events) {
        o << "event " << e.name << " package " << e.package << " cpu " << e.cpu << " scale " << e.scale << "\n";
    }
    return o.str();
}

std::string format_error(const std::string& category, const std::string& message, const std::string& fix) {
    auto clean = [](std::string s, bool tab_ok) {
        for (char& c : s) {
            if (c == '\n' || (!tab_ok && c == '\t') || c == '\0') c = ' ';
        }
        return s;
    };
    return "error " + clean(category, false) + " " + clean(message, false) + "\t" + clean(fix, true) + "\n";
}

std::optional<Reply> parse_reply(const std::string& text, std::size_t fds_received) {
    std::vector<std::string> lines;
    if (text.size() > kMaxMessage || !split_lines(text, lines)) return std::nullopt;
    Reply r;
    if (lines[0].rfind("error ", 0) == 0) {
        if (lines.size() != 1 || fds_received != 0) return std::nullopt;
        const std::string rest = lines[0].substr(6);
        const std::size_t sp = rest.find(' ');
        const std::size_t tab = rest.find('\t');
        if (sp == std::string::npos || tab == std::string::npos || tab < sp) return std::nullopt;
        r.category = rest.substr(0, sp);
        if (!category_of(r.category)) return std::nullopt;
        r.message = rest.substr(sp + 1, tab - sp - 1);
        r.fix = rest.substr(tab + 1);
        return r;
    }
    int n = 0;
    if (lines[0].rfind("ok ", 0) != 0 || !parse_int(lines[0].substr(3), 1, static_cast<int>(kMaxFds), n)) {
        return std::nullopt;
    }
    if (static_cast<std::size_t>(n) != fds_received || lines.size() != static_cast<std::size_t>(n) + 1) return std::nullopt;
    r.ok = true;
    for (int i = 1; i <= n; ++i) {
        std::istringstream in(lines[static_cast<std::size_t>(i)]);
        std::string w_event, name, w_package, package, w_cpu, cpu, w_scale, scale, extra;
        if (!(in >> w_event >> name >> w_package >> package >> w_cpu >> cpu >> w_scale >> scale) || (in >> extra)) {
            return std::nullopt;
        }
        Event e;
        if (w_event != "event" || w_package != "package" || w_cpu != "cpu" || w_scale != "scale") return std::nullopt;
        if (!is_event_name(name) || !parse_int(package, 0, 4095, e.package) || !parse_int(cpu, 0, 1 << 20, e.cpu)) {
            return std::nullopt;
        }
        char* end = nullptr;
        errno = 0;
        e.scale = std::strtod(scale.c_str(), &end);
        if (errno || end != scale.c_str() + scale.size() || !std::isfinite(e.scale) || e.scale <= 0 || e.scale > 1.0) {
            return std::nullopt;
        }
        e.name = name;
        r.events.push_back(std::move(e));
    }
    return r;
}

bool send_message(int sock, const std::string& text, const std::vector<int>& fds) {
    if (fds.size() > kMaxFds || text.size() > kMaxMessage) {
        errno = E2BIG;
        return false;
    }
    iovec iov{const_cast<char*>(text.data()), text.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    std::vector<char> control(CMSG_SPACE(sizeof(int) * kMaxFds), 0);
    if (!fds.empty()) {
        msg.msg_control = control.data();
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
        cmsghdr* c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
        std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    ssize_t n;
    do {
        n = ::sendmsg(sock, &msg, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    return n == static_cast<ssize_t>(text.size());
}

bool recv_message(int sock, std::string& text, std::vector<int>& fds, int timeout_ms) {
    pollfd p{sock, POLLIN, 0};
    int ready;
    do {
        ready = ::poll(&p, 1, timeout_ms);
    } while (ready < 0 && errno == EINTR);
    if (ready <= 0) {
        if (ready == 0) errno = ETIMEDOUT;
        return false;
    }
    std::vector<char> buf(kMaxMessage + 1);
    iovec iov{buf.data(), buf.size()};
    std::vector<char> control(CMSG_SPACE(sizeof(int) * (kMaxFds + 3)), 0);
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    ssize_t n;
    do {
        n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    if (n < 0) return false;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (std::size_t i = 0; i < count; ++i) {
                int fd;
                std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
                fds.push_back(fd);
            }
        }
    }
    if ((msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || n == 0) {
        for (int fd : fds) ::close(fd);
        fds.clear();
        errno = n == 0 ? ECONNRESET : EMSGSIZE;  // n == 0: the peer closed without a word
        return false;
    }
    text.assign(buf.data(), static_cast<std::size_t>(n));
    return true;
}

std::string check_peer(int sock, unsigned allowed_gid) {
    ucred cred{};
    socklen_t len = sizeof cred;
    if (::getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
        return std::string("cannot read the peer's credentials: ") + std::strerror(errno);
    }
    if (cred.pid != ::getppid()) return "the socket's peer is not the process that started the helper";
    if (cred.uid != ::getuid()) return "the socket's peer runs as another user";
    if (cred.uid == 0) return {};
    if (allowed_gid == 0) return "the helper is not set up for a group (its file belongs to group root)";
    if (::getgid() == allowed_gid) return {};
    const int n = ::getgroups(0, nullptr);
    std::vector<gid_t> groups(static_cast<std::size_t>(n > 0 ? n : 0));
    if (n > 0 && ::getgroups(n, groups.data()) == n) {
        for (gid_t g : groups) {
            if (g == allowed_gid) return {};
        }
    }
    return "user " + std::to_string(cred.uid) + " is not a member of the helper's group (gid " +
           std::to_string(allowed_gid) + ")";
}

std::vector<Event> request_from_helper(const std::string& helper_path, int timeout_ms) {
    const std::string fix =
        "ask an administrator to run `sudo greenprobe setup-perf --apply` (it grants the helper cap_perfmon and "
        "adds you to its group), or lower kernel.perf_event_paranoid to 0";
    if (::access(helper_path.c_str(), X_OK) != 0) {
        throw errno_error(errno, "cannot run greenprobe-perf-helper", helper_path, fix);
    }
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
        throw errno_error(errno, "socketpair for greenprobe-perf-helper", helper_path, fix);
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, sv[1], kHelperSocketFd);  // dup2 clears close-on-exec
    char* argv[] = {const_cast<char*>(helper_path.c_str()), nullptr};
    pid_t pid = -1;
    const int rc = ::posix_spawn(&pid, helper_path.c_str(), &actions, nullptr, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(sv[1]);
    if (rc != 0) {
        ::close(sv[0]);
        throw errno_error(rc, "cannot start greenprobe-perf-helper", helper_path, fix);
    }
    std::string text;
    std::vector<int> fds;
    // A helper that refuses answers before reading the request and exits: the send may fail (EPIPE)
    // with its answer already waiting, so it is read whatever the send did.
    send_message(sv[0], kRequest, {});
    const bool got = recv_message(sv[0], text, fds, timeout_ms);
    const int saved = errno;
    ::close(sv[0]);
    int status = 0;
    if (!got) ::kill(pid, SIGKILL);
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (!got) {
        throw SensorError(ErrorCategory::Io,
                          "greenprobe-perf-helper (" + helper_path + ") gave no answer: " + std::strerror(saved) +
                              (WIFSIGNALED(status)  ? " (killed by signal " + std::to_string(WTERMSIG(status)) + ")"
                               : WIFEXITED(status) ? " (it exited with status " + std::to_string(WEXITSTATUS(status)) + ")"
                                                   : ""),
                          "`greenprobe setup-perf --check` says how the helper is set up; reinstalling greenprobe replaces a "
                          "helper of another version");
    }
    auto reply = parse_reply(text, fds.size());
    if (!reply || !reply->ok) {
        for (int fd : fds) ::close(fd);
        if (!reply) {
            throw SensorError(ErrorCategory::Io, "greenprobe-perf-helper (" + helper_path + ") answered nonsense",
                              "reinstall greenprobe: the helper and the package must be the same version");
        }
        throw HelperRefused(category_of(reply->category).value_or(ErrorCategory::Io),
                            "greenprobe-perf-helper: " + reply->message, reply->fix);
    }
    for (std::size_t i = 0; i < fds.size(); ++i) reply->events[i].fd = fds[i];
    return reply->events;
}

}  // namespace greenprobe::perf_handoff
