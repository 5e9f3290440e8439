// A dependency-free test harness: TEST(name) { CHECK(...); } and a main that runs them all.
#pragma once

#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

namespace check {

struct Case {
    const char* name;
    std::function<void()> fn;
};
inline std::vector<Case>& cases() {
    static std::vector<Case> c;
    return c;
}
inline int& failures() {
    static int f = 0;
    return f;
}
struct Register {
    Register(const char* name, std::function<void()> fn) { cases().push_back({name, std::move(fn)}); }
};

inline int run_all() {
    std::setvbuf(stdout, nullptr, _IONBF, 0);  // keep output if a sanitizer aborts
    int failed_cases = 0;
    for (const auto& c : cases()) {
        const int before = failures();
        try {
            c.fn();
        } catch (const std::exception& e) {
            std::printf("  exception: %s\n", e.what());
            ++failures();
        }
        const bool ok = failures() == before;
        std::printf("%s %s\n", ok ? "PASS" : "FAIL", c.name);
        if (!ok) ++failed_cases;
    }
    std::printf("%d passed, %d failed\n", static_cast<int>(cases().size()) - failed_cases, failed_cases);
    return failed_cases == 0 ? 0 : 1;
}

}  // namespace check

#define CHECK_CONCAT2(a, b) a##b
#define CHECK_CONCAT(a, b) CHECK_CONCAT2(a, b)
#define TEST(name)                                                              \
    static void name();                                                         \
    static check::Register CHECK_CONCAT(reg_, name)(#name, name);               \
    static void name()

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            std::printf("  %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);  \
            ++check::failures();                                                     \
        }                                                                            \
    } while (0)

// Like CHECK, but ends the test case when it fails (use before indexing what it guards).
#define REQUIRE(cond)                                                                  \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            std::printf("  %s:%d: REQUIRE(%s) failed\n", __FILE__, __LINE__, #cond);  \
            ++check::failures();                                                       \
            return;                                                                    \
        }                                                                              \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                                          \
    do {                                                                                               \
        const double va_ = (a), vb_ = (b);                                                             \
        if (!(std::fabs(va_ - vb_) <= (tol))) {                                                        \
            std::printf("  %s:%d: %s = %.12g, %s = %.12g, tol %.3g\n", __FILE__, __LINE__, #a, va_, #b, vb_, \
                        static_cast<double>(tol));                                                     \
            ++check::failures();                                                                       \
        }                                                                                              \
    } while (0)

#define CHECK_THROWS(expr)                                                                   \
    do {                                                                                     \
        bool threw_ = false;                                                                 \
        try {                                                                                \
            (void)(expr);                                                                    \
        } catch (...) {                                                                      \
            threw_ = true;                                                                   \
        }                                                                                    \
        if (!threw_) {                                                                       \
            std::printf("  %s:%d: %s did not throw\n", __FILE__, __LINE__, #expr);           \
            ++check::failures();                                                             \
        }                                                                                    \
    } while (0)

#define TEST_MAIN() \
    int main() { return check::run_all(); }
