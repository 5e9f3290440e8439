// The descriptor hand-off between greenprobe-perf-helper and the rapl-perf sensor: the protocol's
// parsers (fuzzed: random and mutated replies never crash, never yield events that disagree with the
// descriptors received), and SCM_RIGHTS over a socketpair.
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "check.hpp"
#include "perf_handoff.hpp"

using namespace greenprobe;
using namespace greenprobe::perf_handoff;

namespace {

std::vector<Event> two_packages() {
    std::vector<Event> es;
    for (int p = 0; p < 2; ++p) {
        for (const char* name : {"energy-pkg", "energy-ram"}) es.push_back({name, p, p * 16, 0x1p-32, -1});
    }
    return es;
}

}  // namespace

TEST(the_request_is_one_exact_line) {
    CHECK(parse_request(kRequest));
    CHECK(!parse_request("greenprobe-perf-helper 1"));
    CHECK(!parse_request("greenprobe-perf-helper 2\n"));
    CHECK(!parse_request(std::string(kRequest) + "event energy-pkg\n"));
    CHECK(!parse_request(""));
}

TEST(an_ok_reply_round_trips_and_must_match_the_descriptors) {
    const auto es = two_packages();
    const std::string text = format_ok(es);
    auto r = parse_reply(text, es.size());
    REQUIRE(r && r->ok);
    REQUIRE(r->events.size() == 4);
    CHECK(r->events[3].name == "energy-ram" && r->events[3].package == 1 && r->events[3].cpu == 16);
    CHECK(r->events[0].scale == 0x1p-32);
    CHECK(!parse_reply(text, 3));  // one descriptor fewer than the lines say
    CHECK(!parse_reply(text, 5));
    CHECK(!parse_reply(text.substr(0, text.size() - 1), 4));  // no final newline
}

TEST(an_error_reply_carries_category_message_and_fix) {
    const std::string text = format_error("permission", "user 1000 is not a member\nof the group", "run\tsetup-perf");
    auto r = parse_reply(text, 0);
    REQUIRE(r && !r->ok);
    CHECK(r->category == "permission");
    CHECK(r->message == "user 1000 is not a member of the group");
    CHECK(r->fix == "run\tsetup-perf");
    CHECK(!parse_reply(format_error("bogus-category", "m", "f"), 0));
    CHECK(!parse_reply(text, 1));  // an error with descriptors attached
}

TEST(malformed_replies_are_refused) {
    for (const char* bad : {"ok 0\n", "ok -1\n", "ok 1\n", "ok 1\nevent energy-pkg package 0 cpu 0\n",
                            "ok 1\nevent energy-pkg package 0 cpu 0 scale 0\n",
                            "ok 1\nevent energy-pkg package 0 cpu 0 scale nan\n",
                            "ok 1\nevent energy-pkg package 0 cpu 0 scale 2\n",
                            "ok 1\nevent ../../etc package 0 cpu 0 scale 1e-9\n",
                            "ok 1\nevent energy-pkg package 99999 cpu 0 scale 1e-9\n",
                            "ok 1\nevent energy-pkg package 0 cpu 0 scale 1e-9 extra\n",
                            "ok 1\nevent energy-pkg package 0 cpu 0 scale 1e-9\n\n", "error permission no-tab\n",
                            "hello\n", "\n"}) {
        if (parse_reply(bad, 1) || parse_reply(bad, 0)) std::fprintf(stderr, "  accepted: %s", bad);
        CHECK(!parse_reply(bad, 1) && !parse_reply(bad, 0));
    }
}

// Random bytes and mutations of valid replies: the parser never crashes (ASan/UBSan watch), and what
// it accepts is consistent: as many events as descriptors, each with a name, a package, a CPU and a
// scale in range.
TEST(fuzzed_replies_never_crash_and_never_yield_inconsistent_events) {
    std::mt19937_64 rng(20261130);
    const std::string good = format_ok(two_packages());
    const std::string err = format_error("not-found", "no power PMU", "use rapl-msr");
    const std::string alphabet = "ok error event package cpu scale energy-pkg 0123456789.e-+\n\t x";
    std::size_t accepted = 0;
    for (int i = 0; i < 200000; ++i) {
        std::string s;
        const int how = static_cast<int>(rng() % 4);
        if (how == 0) {  // random bytes
            s.resize(rng() % 200);
            for (char& c : s) c = static_cast<char>(rng() & 0xff);
        } else if (how == 1) {  // random tokens of the protocol
            const std::size_t n = rng() % 120;
            for (std::size_t k = 0; k < n; ++k) s += alphabet[rng() % alphabet.size()];
        } else {  // a valid reply, mutated
            s = how == 2 ? good : err;
            const int edits = 1 + static_cast<int>(rng() % 4);
            for (int k = 0; k < edits && !s.empty(); ++k) {
                const std::size_t at = rng() % s.size();
                switch (rng() % 3) {
                    case 0: s[at] = static_cast<char>(rng() & 0xff); break;
                    case 1: s.erase(at, 1 + rng() % 8); break;
                    default: s.insert(at, 1, alphabet[rng() % alphabet.size()]);
                }
            }
        }
        const std::size_t fds = rng() % 6;
        auto r = parse_reply(s, fds);
        if (!r) continue;
        ++accepted;
        if (r->ok) {
            CHECK(r->events.size() == fds);
            for (const auto& e : r->events) {
                CHECK(e.name.rfind("energy-", 0) == 0 && e.package >= 0 && e.cpu >= 0 && e.scale > 0 && e.scale <= 1);
            }
        } else {
            CHECK(fds == 0 && !r->category.empty());
        }
        CHECK(!parse_request(s) || s == kRequest);
    }
    std::printf("  %zu of 200000 fuzzed replies accepted\n", accepted);
    CHECK(accepted > 0);  // the mutations reach the accepting paths too
}

TEST(descriptors_cross_a_socketpair_and_read_the_same_file) {
    int sv[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0);
    std::vector<int> fds;
    for (uint64_t v : {11ull, 22ull, 33ull}) {
        const int fd = ::memfd_create("handoff-test", MFD_CLOEXEC);
        REQUIRE(fd >= 0);
        REQUIRE(::pwrite(fd, &v, 8, 0) == 8);
        fds.push_back(fd);
    }
    std::vector<Event> es = {{"energy-pkg", 0, 0, 1e-9, -1}, {"energy-ram", 0, 0, 1e-9, -1}, {"energy-pkg", 1, 8, 1e-9, -1}};
    REQUIRE(send_message(sv[0], format_ok(es), fds));
    std::string text;
    std::vector<int> got;
    REQUIRE(recv_message(sv[1], text, got, 1000));
    auto r = parse_reply(text, got.size());
    REQUIRE(r && r->ok && got.size() == 3);
    for (std::size_t i = 0; i < got.size(); ++i) {
        uint64_t v = 0;
        CHECK(::pread(got[i], &v, 8, 0) == 8);
        CHECK(v == 11ull * (i + 1));
        ::close(got[i]);
        ::close(fds[i]);
    }
    // nothing to read: the receive times out, it does not hang
    text.clear();
    got.clear();
    CHECK(!recv_message(sv[1], text, got, 50) && errno == ETIMEDOUT);
    ::close(sv[0]);
    ::close(sv[1]);
}

TEST(the_peer_check_accepts_the_parent_of_the_same_user_only) {
    int sv[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) == 0);
    // Our peer is ourselves, not our parent: refused, whoever we are.
    CHECK(check_peer(sv[1], 12345).find("not the process that started") != std::string::npos);
    const pid_t child = ::fork();
    if (child == 0) {  // the child sees its parent as the peer, of the same user
        const std::string why = check_peer(sv[1], ::getuid() == 0 ? 0 : ::getgid());
        ::_exit(why.empty() ? 0 : 1);
    }
    int status = 0;
    ::waitpid(child, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    ::close(sv[0]);
    ::close(sv[1]);
}

TEST_MAIN()
